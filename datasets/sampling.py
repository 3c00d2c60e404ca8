"""Few-shot sampling exactly as CLIP-LoRA draws it (docs/protocol.md, "Few-shot sampling").

For the same seed and shot count these functions return the same subsets as CLIP-LoRA, so our
numbers are comparable with its table. They use a `random.Random(seed)`, which produces the same
sequence as seeding Python's global generator, without touching global state.
"""
from __future__ import annotations

import logging
import random
from typing import Sequence

from qlora_clip.data.items import Item

log = logging.getLogger(__name__)


def group_by_label(items: Sequence[Item]) -> dict[int, list[Item]]:
    """Items per label, labels in order of first appearance, items in list order."""
    groups: dict[int, list[Item]] = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return groups


def _draw(group: list[Item], k: int, rng: random.Random, short: list[str]) -> list[Item]:
    """k items without repetition, or with repetition when the group is smaller than k."""
    if len(group) >= k:
        return rng.sample(group, k)
    short.append(f"{group[0].classname!r} ({len(group)})")
    return rng.choices(group, k=k)


def _warn_short(short: list[str], k: int, pool: str) -> None:
    if short:
        log.warning("%d class(es) have fewer than %d %s images: %s; sampling them with repetition, "
                    "as the protocol does (lower --shots to avoid repeated images)",
                    len(short), k, pool, ", ".join(short))


def sample_per_class(items: Sequence[Item], k: int, rng: random.Random, pool: str = "") -> list[Item]:
    sampled, short = [], []
    for group in group_by_label(items).values():
        sampled += _draw(group, k, rng, short)
    _warn_short(short, k, pool)
    return sampled


def sample_train_val(train: Sequence[Item], val: Sequence[Item], shots: int,
                     seed: int) -> tuple[list[Item], list[Item]]:
    """Val first (min(shots, 4) per class), then train (shots per class), from one seeded generator."""
    rng = random.Random(seed)
    few_val = sample_per_class(val, min(shots, 4), rng, "val")
    few_train = sample_per_class(train, shots, rng, "train")
    return few_train, few_val


def sample_train_then_val(train: Sequence[Item], shots: int, seed: int) -> tuple[list[Item], list[Item]]:
    """ImageNet's variant: per class, one draw of shots + min(4, shots); the first `shots` train.

    Without repetition train and val never share an image. CLIP-LoRA has no rule for a class
    smaller than the draw (it fails); we draw with repetition there, as for the other datasets.
    """
    rng = random.Random(seed)
    n_val = min(shots, 4)
    few_train, few_val, short = [], [], []
    for group in group_by_label(train).values():
        drawn = _draw(group, shots + n_val, rng, short)
        few_train += drawn[:shots]
        few_val += drawn[shots:]
    _warn_short(short, shots + n_val, "train")
    return few_train, few_val
