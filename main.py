"""Entry point: one few-shot experiment (zero-shot eval, the method's training, test eval, report).

`main()` reads as the run's table of contents; each step is a function of the module that owns
it, and takes the part of the run's spec (qlora_clip/run/spec.py) it uses. Every method goes the
same way: the method's code (qlora_clip/methods/interface.py) is asked for what differs, never
named here. Base-to-novel and the evaluation on other datasets are
qlora_clip/evaluation/extra_evals.py's; the figures beyond the accuracy (calibration, OOD detection,
interpolation, the predictions file) qlora_clip/evaluation/beyond.py's; the choice of the reported
step qlora_clip/evaluation/selection.py's and the protocol card qlora_clip/run/card.py's; the results
line and the outputs, qlora_clip/run/record.py's.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from pathlib import Path

import torch

from datasets import (DATASET_NAMES, EvalImages, FewShotDataset, build_dataset, build_eval_images, use_template,
                      write_subset)
from datasets.image_collection import build_image_collection
from qlora_clip.backbones.compat import quiet_library_logs
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.families import check_family
from qlora_clip.backbones.loading import ClipBundle, load_bundle
from qlora_clip.backbones.text_buckets import bucket_limit
from qlora_clip.errors import UserError
from qlora_clip.evaluation.evaluator import (
    EvalSettings,
    Evaluator,
    FrozenEmbeddings,
    ZeroShotReuse,
    build_eval_set,
    eval_batch_size,
)
from qlora_clip.evaluation.beyond import BeyondAccuracy, PredictionsFile
from qlora_clip.evaluation.extra_evals import ExtraEvaluations
from qlora_clip.evaluation.selection import ModelSelection, check_val_images
from qlora_clip.evaluation.zero_shot_key import base_key
from qlora_clip.inputs.loaders import TrainStream, default_num_workers
from qlora_clip.inputs.sampler import TrainBatchSampler
from qlora_clip.inputs.train_images import decode_all
from qlora_clip.methods import interface
from qlora_clip.methods.baselines.features import feature_bank
from qlora_clip.methods.fit_check import check_fit
from qlora_clip.methods.interface import Adapted, FitInputs
from qlora_clip.run import record, saved_adapter
from qlora_clip.run.card import protocol_card
from qlora_clip.run.results import timestamp
from qlora_clip.run.spec import RunSpec
from qlora_clip.run.tracking import start_tracking
from qlora_clip.training.checkpointing import TrainCheckpoint
from qlora_clip.training.distributed import Distributed, init_distributed
from qlora_clip.training.memory import PeakMemory
from qlora_clip.training.precision import Precision, allow_tf32, resolve_precision
from qlora_clip.training.result import TrainResult
from qlora_clip.training.settings import TrainConfig
from run_utils import parse_run, seed_everything, setup_logging
from trainer import train

log = logging.getLogger("qlora-clip")


def main(argv: list[str] | None = None) -> dict | None:
    """Run one experiment; return the results record appended to --results_file (None off the main process)."""
    started_at = timestamp()
    spec = parse_run(argv)
    setup_logging()
    quiet_library_logs()
    # The cheap things first: the data folders and split files (a missing dataset is said before any checkpoint is
    # looked up), then the checkpoint's config.json (an unsupported checkpoint, a loss or method its family does
    # not allow, or a method that does not fit its layers stops the run there; the family chooses the prompt), and
    # only then any weights.
    data = read_data(spec)
    targets = [read_target(spec, name) for name in spec.evaluation.eval_datasets]
    ood_sets = [read_ood(spec, name) for name in spec.evaluation.ood_datasets]
    check_val_images(spec.evaluation, len(data.val), spec.dataset)
    checkpoint = spec.checkpoint
    check_family(checkpoint.family, spec.train.loss, spec.adapter.method, spec.backbone)
    check_fit(spec.adapter, checkpoint)  # the method's rank and config on the layers' shapes (meta device, no weights)
    data = use_template(data, spec.data.template, checkpoint.family.template)
    targets = [use_template(target, spec.data.template, checkpoint.family.template) for target in targets]
    if spec.evaluation.eval_only:
        # Refused unless it matches the flags and the base, so the line records what was trained.
        saved_adapter.check_saved_run(spec, checkpoint.source)
    dist = init_distributed(spec.compute.device)
    precision = resolve_precision(spec.compute.compute_dtype, dist.device)
    allow_tf32(dist.device)

    seed_everything(spec.seed)
    bundle = load_bundle(checkpoint, spec.adapter.method.quantized, dist.device, precision.dtype,
                         spec.model.gradient_checkpointing)
    adapted = interface.build(bundle, spec.adapter, saved=spec.adapter_dir if spec.evaluation.eval_only else None)
    buckets, buckets_off = bucket_limit(bundle.family, adapted.model, len(data.classnames))
    prompts = ClassPrompts(bundle.tokenizer, data.prompts(), dist.device, text=bundle.text, buckets=buckets,
                           classes=data)
    num_workers = default_num_workers(dist.device) if spec.data.num_workers is None else spec.data.num_workers
    eval_settings = EvalSettings(bundle.image, eval_batch_size(spec.train.batch_size), spec.evaluation.cache_dir,
                                 num_workers, dist, text_buckets=buckets, text=bundle.text)
    test = build_eval_set(data.name, data.test, data.load_image, prompts, eval_settings)
    evaluator = Evaluator(adapted, precision, dist, zero_shot_reuse(spec, bundle, precision.name, dist.device, buckets),
                          frozen_embeddings(spec, bundle, precision.name, dist.device))
    extra = ExtraEvaluations(data, targets, bundle.tokenizer, eval_settings)
    beyond = BeyondAccuracy(spec.evaluation, ood_sets, prompts, eval_settings, predictions_file(spec, data))
    selection = ModelSelection.for_run(spec.evaluation, spec.train.total_steps, evaluator, lambda: build_eval_set(
        f"{data.name} (val)", data.val, data.load_image, prompts, eval_settings), len(data.val))
    eval_memory = PeakMemory(dist.device)
    tracker = start_tracking(spec.tracking, dict(spec.flags), main_process=dist.is_main)

    if dist.is_main:
        write_subset(data, spec.subset_path)
    eval_start = time.perf_counter()
    with eval_memory.measure():
        zero_shot_acc = beyond.zero_shot(evaluator, test)
    eval_seconds = time.perf_counter() - eval_start
    log.info("zero-shot accuracy %.2f%%%s", zero_shot_acc, " (stored by an earlier run)" if test.zero_shot_cached else "")
    tracker.log_eval({"zero_shot_accuracy": zero_shot_acc}, step=0)

    if spec.evaluation.eval_only:
        result = TrainResult(steps=0, seconds=0.0)
    else:
        result = adapted.fit(fit_inputs(spec, data, bundle, prompts, precision, dist, num_workers, tracker, selection))
    eval_start = time.perf_counter()
    with eval_memory.measure():
        test_acc = beyond.trained(evaluator, test)
    eval_seconds += time.perf_counter() - eval_start
    test_shards = dist.gather_count(test.loader.images)
    extra_fields = extra.results(evaluator, test_acc, zero_shot_acc)
    beyond_fields = beyond.results(evaluator, adapted, test, targets, extra.eval_set)
    if not dist.is_main:
        return None

    line = {
        **record.run_fields(spec, adapted, dist, precision.name, result, started_at),
        **record.method_fields(adapted, result, prompts, buckets_off, test.embeddings),
        "family": bundle.family.name, "zero_shot_acc": zero_shot_acc, "zero_shot_cached": test.zero_shot_cached,
        "shots_drawn": data.shots_drawn,
        "test_acc": test_acc, "eval_seconds": eval_seconds, "test_images_per_process": test_shards,
        "subset_file": str(spec.subset_path),
        **record.draw_fields(data),
        **eval_memory.read(prefix="eval_"),
        **extra_fields,
        **beyond_fields, "protocol_card": protocol_card(spec, adapted, selection, data),
        **tracker.fields(),
    }
    return record.finish(spec, adapted, line, tracker, data.template, failed=beyond.errors)


def read_data(spec: RunSpec) -> FewShotDataset:
    """The run's few-shot draw (its split files read, its folders checked), before anything else loads."""
    data = build_dataset(spec.dataset, spec.data.root_path, spec.shots, spec.seed, spec.data.template, spec.protocol,
                         split_file=spec.data.split_file)
    log.info("%s: %d classes, %d train / %d val / %d test images", spec.dataset, len(data.classnames),
             len(data.train), len(data.val), len(data.test))
    return data


def read_target(spec: RunSpec, name: str) -> EvalImages:
    """The full test set of an --eval_datasets target."""
    try:
        return build_eval_images(name, spec.data.root_path, spec.data.template)
    except UserError as err:
        # The loaders name the dataset as a --dataset; here it was asked for as a target.
        raise UserError(f"--eval_datasets {name}: {str(err).replace(f'--dataset {name}: ', '', 1)}") from err


def read_ood(spec: RunSpec, name: str) -> EvalImages:
    """An --ood_datasets set: one of our datasets' test images (labels unused), or every image under a folder."""
    if name not in DATASET_NAMES or name == "folder":
        return build_image_collection(name)
    try:
        return build_eval_images(name, spec.data.root_path)
    except UserError as err:
        # The loaders name the dataset as a --dataset; here it was asked for as an OOD set.
        raise UserError(f"--ood_datasets {name}: {str(err).replace(f'--dataset {name}: ', '', 1)}") from err


def predictions_file(spec: RunSpec, data: FewShotDataset) -> PredictionsFile:
    """Where --save_predictions writes, and what the file says of the run."""
    return PredictionsFile(spec.predictions_path, spec.name, spec.dataset, list(data.classnames),
                           [str(item.source) for item in data.test])


def fit_inputs(spec: RunSpec, data: FewShotDataset, bundle: ClipBundle, prompts: ClassPrompts, precision: Precision,
               dist: Distributed, num_workers: int, tracker, selection: ModelSelection) -> FitInputs:
    """What the method may fit on, each part built only if the method asks for it."""
    def train_steps(adapted: Adapted, config: TrainConfig | None = None) -> TrainResult:
        """The shared loop on the run's train stream: the whole run, or a stage of the method's (`config`)."""
        config = spec.train if config is None else config
        stream = build_train_stream(data, bundle, config, spec, dist, num_workers)
        checkpoint = TrainCheckpoint(spec.checkpoint_path, spec.outputs.checkpoint_every, spec.trained_identity,
                                     dist.device, read_fingerprint=spec.trained_identity_of)
        result = train(adapted, stream, prompts, config, precision, dist, checkpoint, resume=spec.outputs.resume,
                       desc=f"train {spec.method}", on_step=[*tracker.step_callbacks(), *selection.callbacks(adapted)])
        selection.restore(adapted)  # --select_on val: the chosen step's weights back
        return result

    def one_epoch() -> list[torch.Tensor]:
        """One epoch of the run's own augmented train batches, as one process draws them (so every process
        initialises the same weights)."""
        one_process = Distributed(rank=0, world=1, device=dist.device)
        config = dataclasses.replace(spec.train, gradient_accumulation_steps=1)
        stream = build_train_stream(data, bundle, config, spec, one_process, num_workers)
        steps = max(1, math.ceil(len(data.train) / config.batch_size))
        return [images for _, (images, _labels) in zip(range(steps), stream)]

    def features():
        return feature_bank(bundle, precision, data, spec.dataset_tag, spec.evaluation.cache_dir,
                            eval_batch_size(spec.train.batch_size), num_workers, spec.data.decode_budget_gb)

    return FitInputs(data=data, prompts=prompts, precision=precision, train_steps=train_steps, one_epoch=one_epoch,
                     features=features, train=spec.train)


def build_train_stream(data: FewShotDataset, bundle: ClipBundle, train_config: TrainConfig, spec: RunSpec,
                       dist: Distributed, num_workers: int) -> TrainStream:
    """The train images decoded once (or per step above --decode_budget_gb), augmented per image."""
    images = decode_all([item.source for item in data.train], data.load_image, spec.data.decode_budget_gb)
    sampler = TrainBatchSampler(len(data.train), train_config.batch_size, train_config.gradient_accumulation_steps,
                                train_config.seed, dist.rank, dist.world, offset=train_config.first_step,
                                drop_last=spec.adapter.method.optimization.drop_last)
    return TrainStream(images, [item.label for item in data.train], bundle.image, sampler, num_workers, dist.device)


def zero_shot_reuse(spec: RunSpec, bundle: ClipBundle, compute_dtype: str, device: torch.device,
                    text_buckets: int) -> ZeroShotReuse | None:
    """The zero-shot store under --eval_cache_dir and this run's base model's part of its keys
    (None with --no_zero_shot_cache or without a cache folder)."""
    folder = spec.evaluation.zero_shot_dir
    if folder is None:
        return None
    base = base_key(bundle.checkpoint.source, compute_dtype, spec.adapter.method.quantized, bundle.image, device.type,
                    text_buckets)
    return ZeroShotReuse(folder, base)


def frozen_embeddings(spec: RunSpec, bundle: ClipBundle, compute_dtype: str,
                      device: torch.device) -> FrozenEmbeddings | None:
    """Where a frozen vision tower's test embeddings are stored across runs (<--eval_cache_dir>/features), and
    this run's base model's part of their keys; None without a cache folder."""
    if spec.evaluation.cache_dir is None:
        return None
    base = base_key(bundle.checkpoint.source, compute_dtype, spec.adapter.method.quantized, bundle.image, device.type,
                    text_buckets=1)
    return FrozenEmbeddings(Path(spec.evaluation.cache_dir) / "features", base)


def cli() -> int:
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
