"""Hand-made inputs for the baselines' unit tests: a feature bank that hands out given tensors."""
from __future__ import annotations

import torch

from qlora_clip.backbones.families import CLIP
from qlora_clip.methods.baselines.base import BaselineInputs
from qlora_clip.methods.baselines.features import FeatureSet
from qlora_clip.training.precision import resolve_precision

CPU = torch.device("cpu")
# CLIP's logits (100 x cosine of normalised features); its fixed scale needs no model.
CLIP_LOGITS = CLIP.logits(None)


class GivenBank:
    """FeatureBank's interface over fixed tensors: `views` maps a view stream to (views, images, dim)."""

    def __init__(self, train: torch.Tensor, train_labels: torch.Tensor, val: torch.Tensor, val_labels: torch.Tensor,
                 views: dict[str, torch.Tensor] | None = None):
        self.train, self.train_labels, self.val_set = train, train_labels, val
        self.val_labels, self.views = val_labels, views or {}

    def train_centre(self) -> FeatureSet:
        return FeatureSet("train", self.train, self.train_labels)

    def val(self) -> FeatureSet:
        return FeatureSet("val", self.val_set, self.val_labels)

    def train_views(self, views) -> FeatureSet:
        given = self.views[views.stream]
        return FeatureSet(f"train-{views.stream}", given[:views.count], self.train_labels)


def given_inputs(bank: GivenBank, text: torch.Tensor, dataset: str = "folder", shots: int = 2,
                 seed: int = 1) -> BaselineInputs:
    classnames = [f"class{k}" for k in range(text.shape[0])]
    return BaselineInputs(dataset, shots, seed, classnames, text, bank, model=None, tokenizer=None,
                          precision=resolve_precision("fp32", CPU), family_logits=CLIP_LOGITS)


def base2new_then_eval_only(mode: str, folder, tmp) -> tuple[dict, dict]:
    """The lines of a base-to-novel run of `mode` on the tiny model (saved under `tmp`) and of its --eval_only
    reload: a method fitted on frozen features must give the same figures from its saved fit."""
    import main

    argv = ["--backbone", "tiny", "--dataset", "folder", "--root_path", str(folder), "--shots", "2",
            "--mode", mode, "--protocol", "base2new", "--results_file", str(tmp / "results.jsonl"),
            "--save_path", str(tmp / "saved"), "--eval_cache_dir", str(tmp / "cache")]
    return main.main(argv), main.main([*argv, "--eval_only"])
