"""The training losses over a micro-batch's logits (images x classes), summed over its images.

The trainer divides the sum by the step's image count, so every loss is a mean per image however
the step is split (trainer.TrainStep).

    ce       cross-entropy over the classes: CLIP-LoRA's loss, for every family (the default: the
             protocol's, and it optimises the top-1 choice among the classes that accuracy scores)
    sigmoid  SigLIP's one-vs-rest loss, the one SigLIP was pre-trained with: each class is a binary
             decision on its logit (bias included), -log sigmoid(z * logit) with z = +1 for the true
             class and -1 for every other, summed over the classes (SigLIP families only,
             families.check_loss)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from qlora_clip.paper import LOSSES


def summed_loss(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss `name` summed over the images of `logits` (N x C) with integer `labels` (N)."""
    if name == "ce":
        return F.cross_entropy(logits, labels, reduction="sum")
    if name == "sigmoid":
        signs = 2 * F.one_hot(labels, logits.shape[1]).to(logits.dtype) - 1
        return -F.logsigmoid(signs * logits).sum()
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
