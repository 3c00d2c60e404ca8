"""Few-shot sampling exactly as CLIP-LoRA draws it (REFERENCE.md section 3).

For the same seed and shot count these functions return the same subsets as CLIP-LoRA, so our
numbers are comparable with its table. They use a `random.Random(seed)`, which produces the same
sequence as seeding Python's global generator, without touching global state.
"""
from __future__ import annotations

import logging
import random
from typing import Sequence

from .base import Item

log = logging.getLogger(__name__)


def group_by_label(items: Sequence[Item]) -> dict[int, list[Item]]:
    """Items per label, labels in order of first appearance, items in list order."""
    groups: dict[int, list[Item]] = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return groups


def sample_per_class(items: Sequence[Item], k: int, rng: random.Random) -> list[Item]:
    sampled = []
    for label, group in group_by_label(items).items():
        if len(group) >= k:
            sampled.extend(rng.sample(group, k))
        else:
            log.warning("class %r has %d images, fewer than %d: sampling with repetition, as the "
                        "protocol does", group[0].classname, len(group), k)
            sampled.extend(rng.choices(group, k=k))
    return sampled


def sample_train_val(train: Sequence[Item], val: Sequence[Item], shots: int,
                     seed: int) -> tuple[list[Item], list[Item]]:
    """Val first (min(shots, 4) per class), then train (shots per class), from one seeded generator."""
    rng = random.Random(seed)
    few_val = sample_per_class(val, min(shots, 4), rng)
    few_train = sample_per_class(train, shots, rng)
    return few_train, few_val
