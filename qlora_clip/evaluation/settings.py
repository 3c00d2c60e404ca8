"""The evaluation flags of a run (EvalConfig): other datasets' test sets, a saved adapter, the caches."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qlora_clip.data.settings import DATASET_NAMES
from qlora_clip.flags import BOOKKEEPING, RUN, flag
from qlora_clip.machine import cache_root


def default_eval_cache_dir() -> str:
    return str(cache_root() / "test-images")


@dataclass(frozen=True)
class EvalConfig:
    eval_datasets: tuple[str, ...] = flag(
        (), "after training (or with --eval_only), also evaluate on each of these datasets' full test sets with their "
            "own class prompts, zero-shot beside it (cross-dataset transfer, domain generalization); choose from "
            f"{', '.join(n for n in DATASET_NAMES if n != 'folder')}", group="protocol", role=RUN, nargs="+",
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

    @property
    def cache_dir(self) -> str | None:
        """The disk cache's folder; None with --eval_cache_dir ''."""
        return self.eval_cache_dir or None

    @property
    def zero_shot_dir(self) -> Path | None:
        """The zero-shot store, beside the test images: None without a cache folder or with --no_zero_shot_cache."""
        return Path(self.eval_cache_dir) / "zero-shot" if self.eval_cache_dir and not self.no_zero_shot_cache else None
