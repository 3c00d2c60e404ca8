"""What every baseline is given and gives back, so the runner treats them alike."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from qlora_clip.evaluation.metrics import accuracy_percent, count_correct
from qlora_clip.methods.baselines.features import FeatureBank
from qlora_clip.methods.baselines.views import ViewSet
from qlora_clip.paper import LOGIT_SCALE
from qlora_clip.training.precision import Precision


@dataclass(frozen=True)
class Needs:
    """The feature sets a baseline trains or searches on, encoded (or read) before its fit is timed."""
    val: bool = False             # the few-shot val images, centre-cropped
    train_centre: bool = False    # the train images, centre-cropped (no augmentation)
    views: tuple[ViewSet, ...] = ()


@dataclass
class BaselineInputs:
    """A run's data for a baseline: class names, the run's prompts' text features, the frozen features."""
    dataset: str
    shots: int
    seed: int
    classnames: list[str]
    text: torch.Tensor            # (classes, dim) normalised features of the run's prompts (--template)
    bank: FeatureBank
    model: torch.nn.Module        # the frozen CLIP: CoOp and the ensembles encode text with it
    tokenizer: object
    precision: Precision

    @property
    def device(self) -> torch.device:
        return self.precision.device

    def on_device(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(self.device, torch.float32)


@dataclass
class Fitted:
    """A fitted baseline: logits for test features, and what the results line says about it."""
    predict: Callable[[torch.Tensor], torch.Tensor]  # raw image embeddings (n, dim) on the device -> logits
    params: dict                   # the hyperparameters it ran with, searched values included
    trainable_params: int = 0      # weights an optimiser updated
    added_params: int = 0          # weights it holds beside CLIP's (a cache model's keys and values count)
    steps: int = 0                 # optimiser steps
    images_seen: int = 0           # train features through the method's training, all epochs
    losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Baseline:
    needs: Callable[[str, int], Needs]          # (dataset, shots) -> its feature sets
    fit: Callable[[BaselineInputs], Fitted]


def zero_shot_logits(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """CLIP's logits: 100 x cosine of the (normalised) image embeddings with the text features."""
    return LOGIT_SCALE * F.normalize(features, dim=-1) @ text.T


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent, counted (metrics.py)."""
    return accuracy_percent(int(count_correct(logits, labels.to(logits.device))), len(labels))
