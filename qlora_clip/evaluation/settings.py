"""The evaluation flags of a run (EvalConfig): other datasets' test sets, a saved adapter, the caches, the figures
beyond the accuracy (OOD sets, interpolation, the predictions file) and how the reported model is chosen."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qlora_clip.data.settings import DATASET_NAMES, OOD_DATASETS
from qlora_clip.flags import ADAPTER, BOOKKEEPING, RUN, flag
from qlora_clip.machine import cache_root

# --select_on: the reported model is the last step's, or the best on the few-shot val images.
SELECT_ON = ("last", "val")
# --select_every 0: this many evaluations on the val images, evenly spread over the run's steps.
SELECTION_CHECKS = 10


def default_eval_cache_dir() -> str:
    return str(cache_root() / "test-images")


@dataclass(frozen=True)
class EvalConfig:
    eval_datasets: tuple[str, ...] = flag(
        (), "after training (or with --eval_only), also evaluate on each of these datasets' full test sets with their "
            "own class prompts, zero-shot beside it (cross-dataset transfer, domain generalization); choose from "
            f"{', '.join(n for n in DATASET_NAMES if n != 'folder' and n not in OOD_DATASETS)}", group="protocol", role=RUN, nargs="+",
        choices=DATASET_NAMES, metavar="NAME")
    eval_cache_dir: str = flag(
        help="folder of the preprocessed test images a sweep's runs share ('' = no disk cache), of their zero-shot "
             "accuracies (its zero-shot/ folder) and of frozen image features (its features/ folder)",
        group="data", role=BOOKKEEPING, default_factory=default_eval_cache_dir)
    no_zero_shot_cache: bool = flag(False, "compute the zero-shot accuracies even where an earlier run on the same "
                                    "base, test set, prompts and precision stored them under --eval_cache_dir",
                                    group="data", role=BOOKKEEPING)
    eval_only: bool = flag(False, "load the adapter saved under --save_path and only evaluate it", group="outputs",
                           role=RUN)
    ood_datasets: tuple[str, ...] = flag(
        (), "also score the run's test images against each of these sets' images as out-of-distribution "
            "(MCM at the model's own logits; AUROC and FPR at 95 %% TPR, zero-shot and trained): the OOD sets "
            f"{', '.join(OOD_DATASETS)}, any other dataset's test images, or a folder of images in any layout",
        group="protocol", role=RUN, nargs="+", metavar="NAME|PATH", keyed_at_default=False)
    interpolate: tuple[float, ...] = flag(
        (), "also evaluate the model between the pretrained (0) and the trained weights (1), WiSE-FT: "
            "(1 - alpha) theta_0 + alpha theta_1, at each ALPHA (e.g. 0 0.25 0.5 0.75 1); the methods where that is "
            "defined (docs/evaluation.md)", group="protocol", role=RUN, nargs="+", type=float, metavar="ALPHA",
        keyed_at_default=False)
    save_predictions: bool = flag(False, "write the test set's logits and labels, zero-shot and trained, to "
                                  "<results folder>/predictions/<run's folders>.safetensors", group="outputs",
                                  role=BOOKKEEPING)
    select_on: str = flag("last", "the reported (and saved) model: the last step's, or the one with the best "
                          "accuracy on the few-shot val images (val), evaluated every --select_every steps; "
                          "the test set is never used to choose", group="training", role=ADAPTER, choices=SELECT_ON,
                          keyed_at_default=False)
    select_every: int = flag(0, "with --select_on val: steps between evaluations on the val images (0: "
                             f"{SELECTION_CHECKS} evaluations spread over the run; the last step is always one)",
                             group="training", role=ADAPTER, keyed_at_default=False)

    @property
    def cache_dir(self) -> str | None:
        """The disk cache's folder; None with --eval_cache_dir ''."""
        return self.eval_cache_dir or None

    @property
    def zero_shot_dir(self) -> Path | None:
        """The zero-shot store, beside the test images: None without a cache folder or with --no_zero_shot_cache."""
        return Path(self.eval_cache_dir) / "zero-shot" if self.eval_cache_dir and not self.no_zero_shot_cache else None
