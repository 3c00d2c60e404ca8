"""One baseline run: the data, the frozen CLIP, its features (cached), zero-shot, the fit, the test.

main.py calls `run` for a `--mode` whose method is a baseline (methods.py) and records what it gives
back in the same results line as every run. The phases are measured apart:
- features: encoding (or reading from the cache) the train views and val images the method needs,
  reported per set in `baseline_features`, never in `train_seconds`;
- training: the method's fit on those features (optimisation and hyperparameter search), with its
  peak memory: `train_seconds`, `peak_memory_mb`;
- evaluation: the test set's features (encoded once per backbone and dataset, then read from the
  cache), zero-shot with the run's --template and the method's logits: `eval_seconds`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from datasets import FewShotDataset, build_dataset, write_subset
from qlora_clip.methods.baselines import clip_adapter, coop, linear_probe, lp_plus_plus, tip_adapter, zero_shot_ensemble
from qlora_clip.methods.baselines.backbone import load_frozen_clip
from qlora_clip.methods.baselines.base import Baseline, BaselineInputs, Fitted, accuracy, zero_shot_logits
from qlora_clip.methods.baselines.features import Encoder, FeatureBank
from qlora_clip.methods.baselines.text import prompt_features
from qlora_clip.training.distributed import Distributed
from qlora_clip.errors import UserError
from qlora_clip.evaluation.evaluator import eval_batch_size
from qlora_clip.inputs.loaders import default_num_workers
from qlora_clip.training.memory import PeakMemory
from qlora_clip.backbones.loading import resolve_backbone
from qlora_clip.training.precision import Precision
from qlora_clip.run.spec import RunSpec

log = logging.getLogger(__name__)

BASELINES: dict[str, Baseline] = {
    "zs_ensemble_imagenet": zero_shot_ensemble.IMAGENET_ENSEMBLE,
    "zs_ensemble_dataset": zero_shot_ensemble.DATASET_ENSEMBLE,
    "linear_probe": linear_probe.LINEAR_PROBE,
    "lp_plus_plus": lp_plus_plus.LP_PLUS_PLUS,
    "tip_adapter": tip_adapter.TIP_ADAPTER,
    "tip_adapter_f": tip_adapter.TIP_ADAPTER_F,
    "clip_adapter": clip_adapter.CLIP_ADAPTER,
    "coop": coop.COOP,
}
# Test embeddings scored per batch: the cache model's test x train affinities stay small.
PREDICT_BATCH = 4096


@dataclass
class BaselineRun:
    """What main.py records of a baseline run."""
    model: torch.nn.Module     # the frozen CLIP (its footprint; the method's weights are added)
    fitted: Fitted
    zero_shot_acc: float
    test_acc: float
    test_images: int
    train_seconds: float
    eval_seconds: float
    train_memory: dict         # PeakMemory.read() of the fit
    eval_memory: dict          # PeakMemory.read(prefix="eval_") of the test evaluation
    features: dict             # FeatureBank.describe()

    @property
    def footprint_mb(self) -> float:
        """CLIP's weights plus the method's (float32)."""
        return (self.model.get_memory_footprint() + 4 * self.fitted.added_params) / 2 ** 20


def feature_cache_dir(spec: RunSpec) -> Path | None:
    """<--eval_cache_dir>/features: the frozen features live with the test images they come from (by
    default under the cache root, qlora_clip.config.cache_root); none with --eval_cache_dir ''."""
    return Path(spec.evaluation.cache_dir) / "features" if spec.evaluation.cache_dir else None


def run(spec: RunSpec, dist: Distributed, precision: Precision) -> BaselineRun:
    """Run the baseline `spec.method` on the spec's draw; the record is main.py's to write."""
    if dist.world > 1:
        raise UserError(f"--mode {spec.method}: baselines run in one process; start main.py without "
                        "accelerate launch")
    baseline = BASELINES[spec.method]
    data = build_dataset(spec.dataset, spec.data.root_path, spec.shots, spec.seed, spec.data.template, spec.protocol)
    log.info("%s: %d classes, %d train / %d val / %d test images", spec.dataset, len(data.classnames),
             len(data.train), len(data.val), len(data.test))
    bundle = load_frozen_clip(spec.backbone, spec.method, dist.device, precision.dtype)
    write_subset(data, spec.subset_path)
    num_workers = default_num_workers(dist.device) if spec.data.num_workers is None else spec.data.num_workers
    encoder = Encoder(bundle.model, bundle.image, precision, eval_batch_size(spec.train.batch_size), num_workers)
    bank = FeatureBank(encoder, data, resolve_backbone(spec.backbone), spec.dataset_tag, spec.seed,
                       feature_cache_dir(spec), spec.evaluation.cache_dir, spec.data.decode_budget_gb)
    inputs = BaselineInputs(spec.dataset, spec.shots, spec.seed, data.classnames,
                            prompt_features(bundle.model, bundle.tokenizer, data.prompts(), precision), bank,
                            bundle.model, bundle.tokenizer, precision)

    eval_memory = PeakMemory(dist.device)
    start = time.perf_counter()
    with eval_memory.measure():
        test = bank.test()
        test_features, test_labels = inputs.on_device(test.features), test.labels.to(dist.device)
        zero_shot_acc = accuracy(zero_shot_logits(test_features, inputs.text), test_labels)
    eval_seconds = time.perf_counter() - start
    log.info("zero-shot accuracy %.2f%%", zero_shot_acc)

    prepare_features(baseline, spec, bank, data)
    train_memory = PeakMemory(dist.device)
    train_memory.reset()
    start = time.perf_counter()
    fitted = baseline.fit(inputs)
    if dist.device.type == "cuda":
        torch.cuda.synchronize(dist.device)
    train_seconds = time.perf_counter() - start
    train_peak = train_memory.read()

    start = time.perf_counter()
    with eval_memory.measure():
        test_acc = accuracy(predict(fitted, test_features), test_labels)
    eval_seconds += time.perf_counter() - start
    return BaselineRun(bundle.model, fitted, zero_shot_acc, test_acc, len(test_labels), train_seconds, eval_seconds,
                       train_peak, eval_memory.read(prefix="eval_"), bank.describe())


def prepare_features(baseline: Baseline, spec: RunSpec, bank: FeatureBank, data: FewShotDataset) -> None:
    """Encode (or read) the feature sets the method needs before its fit is timed."""
    needs = baseline.needs(spec.dataset, spec.shots)
    if needs.val and not data.val:
        raise UserError(f"--mode {spec.method} searches its hyperparameters on the val images, and this "
                        f"draw of --dataset {spec.dataset} has none")
    if needs.val:
        bank.val()
    if needs.train_centre:
        bank.train_centre()
    for views in needs.views:
        bank.train_views(views)


@torch.no_grad()
def predict(fitted: Fitted, features: torch.Tensor) -> torch.Tensor:
    """The method's logits for every test embedding, PREDICT_BATCH at a time."""
    return torch.cat([fitted.predict(features[start:start + PREDICT_BATCH])
                      for start in range(0, len(features), PREDICT_BATCH)])
