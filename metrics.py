"""Accuracy from counts: sum the correct predictions, divide once at the end."""
from __future__ import annotations

import torch


def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Top-1 hits in one batch."""
    return int((logits.argmax(dim=-1) == labels).sum().item())


def accuracy_percent(correct: int, total: int) -> float:
    """Top-1 accuracy in percent (0-100)."""
    if total <= 0:
        raise ValueError("accuracy of an empty set is undefined")
    return 100.0 * correct / total
