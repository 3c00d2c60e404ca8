"""Accuracy from counts: sum the correct predictions, divide once at the end.

No torch import at module level: the summaries use harmonic_mean without loading torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Top-1 hits in one batch, as a 0-d tensor on the logits' device (no host sync)."""
    return (logits.argmax(dim=-1) == labels).sum()


def accuracy_percent(correct: int, total: int) -> float:
    """Top-1 accuracy in percent (0-100)."""
    if total <= 0:
        raise ValueError("accuracy of an empty set is undefined")
    return 100.0 * correct / total


def harmonic_mean(a: float, b: float) -> float:
    """2ab / (a + b), base-to-novel's HM: high only when both are; 0 when both are 0."""
    return 2 * a * b / (a + b) if a + b else 0.0
