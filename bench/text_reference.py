"""The text pass before once-per-update: every micro-batch re-encodes all prompts with gradients and
back-propagates them at once, on every rank. Kept here, out of the training code, as the reference the
ImageNet-shaped study times the production path (training/text_pass.PerUpdateText) against."""
from __future__ import annotations

from typing import Callable

import torch

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.training.distributed import Distributed


class PerMicroBatchText:
    """All prompts re-encoded with gradients at every micro-batch, back-propagated right away."""
    once_per_update = False
    shards = 1

    def __init__(self, prompts: ClassPrompts, dist: Distributed | None = None):
        self.prompts = prompts

    def start(self, encode: Callable[[ClassPrompts], torch.Tensor]) -> None:
        pass

    def features(self, encode: Callable[[ClassPrompts], torch.Tensor]) -> torch.Tensor:
        return encode(self.prompts)

    def backward(self, features: torch.Tensor, grad: torch.Tensor) -> None:
        features.backward(grad)

    def finish(self) -> None:
        pass
