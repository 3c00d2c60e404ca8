"""The class prompts' text pass of a training step when the text tower has adapters.

`PerUpdateText`: the prompts are encoded once per optimizer step (the method's text features:
methods/interface.Adapted.text_features), the same update as encoding them per micro-batch (with
adapter dropout 0; docs/protocol.md, "Batches", says what holds with dropout). The
  micro-batches' losses see a detached copy of the features and their gradients are summed; after
  the last micro-batch the text tower is back-propagated once with that sum. By linearity this is
  the gradient of the step's loss, whatever the number of micro-batches, for one text pass
  instead of one per micro-batch. The text tower's activations live for the whole step (one
  forward's graph, as one micro-batch's did); the image micro-batches are freed one by one.
  With several processes each rank encodes an equal share of the prompts and the shares are
  all-gathered with autograd (Distributed.gather_shares): the gather's backward sums every rank's
  gradient into each share's owner, so each rank back-propagates its own share with the gradient
  of all ranks' losses, and Distributed.sum_gradients, which already sums the adapter gradients
  after the step, adds up the shares: the 1-process text gradient, times exactly 1. A rank with
  no image in the step still encodes its share and joins both collectives, with a zero gradient.
(bench/text_reference.py keeps the path before this one, every micro-batch re-encoding all prompts,
as the benchmark's reference.)

Shares are dealt round-robin over the prompts sorted by token length, so every rank's share has
the same spread of lengths and, bucketed (text_buckets.py), the same cost.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from qlora_clip.training.distributed import Distributed
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.text_buckets import MIN_SAVING


def shard_rows(lengths: list[int], rank: int, world: int) -> tuple[list[int], list[int]]:
    """(rows rank `rank` encodes, position of every prompt in the gathered shares).

    Every rank encodes ceil(n / world) rows, so the all-gather sees equal shapes; a short share is
    padded by repeating its first row (or row 0), whose copy is never read back.
    """
    n = len(lengths)
    share = -(-n // world)
    by_length = sorted(range(n), key=lambda i: (lengths[i], i))
    shares = [by_length[r::world] for r in range(world)]
    gathered_at = [0] * n
    for r, rows in enumerate(shares):
        for j, row in enumerate(rows):
            gathered_at[row] = r * share + j
    mine = shares[rank]
    return mine + [mine[0] if mine else 0] * (share - len(mine)), gathered_at


class PerUpdateText:
    """The prompts encoded once per optimizer step (this rank's share, gathered), one backward at its end."""
    once_per_update = True

    def __init__(self, prompts: ClassPrompts, dist: Distributed):
        self.dist, self.world = dist, dist.world
        if dist.world > 1:
            rows, gathered_at = shard_rows(prompts.lengths, dist.rank, dist.world)
            self.share = prompts.share(rows)
            self.gathered_at = torch.tensor(gathered_at, dtype=torch.long, device=dist.device)
        else:
            self.share, self.gathered_at = prompts, None
        self.encoded = self.detached = self.grad = None

    @property
    def shards(self) -> int:
        return self.world

    def start(self, encode: Callable[[ClassPrompts], torch.Tensor]) -> None:
        """Encode the step's text features (with the text tower's graph) and hand out a detached copy."""
        local = encode(self.share)
        if self.gathered_at is not None:
            local = self.dist.gather_shares(local)[self.gathered_at]
        self.encoded = local
        self.detached = local.detach().requires_grad_(True)
        self.grad = None

    def features(self, encode: Callable[[ClassPrompts], torch.Tensor]) -> torch.Tensor:
        return self.detached

    def backward(self, features: torch.Tensor, grad: torch.Tensor) -> None:
        """Add one micro-batch's gradient of the (detached) features."""
        self.grad = grad if self.grad is None else self.grad + grad

    def finish(self) -> None:
        """Back-propagate the step's summed gradient through the text tower (and the gather) once."""
        grad = self.grad
        if grad is None and self.world > 1:
            grad = torch.zeros_like(self.encoded)  # no image here this step: still join the collective
        if grad is not None:
            self.encoded.backward(grad)
        self.encoded = self.detached = self.grad = None




class TextPass(Protocol):
    """How a training step gets its text features and sends their gradient back (PerUpdateText, or the
    benchmark's reference)."""
    once_per_update: bool
    shards: int

    def start(self, encode: Callable[[ClassPrompts], torch.Tensor]) -> None: ...
    def features(self, encode: Callable[[ClassPrompts], torch.Tensor]) -> torch.Tensor: ...
    def backward(self, features: torch.Tensor, grad: torch.Tensor) -> None: ...
    def finish(self) -> None: ...


def training_speedups(text: TextPass | None) -> tuple[bool, int, dict[str, str]]:
    """(once per update, shards, why each that is off is off) of a trainer's text pass (None: frozen text)."""
    if text is None:
        frozen = "the text tower has no adapter: its prompts are encoded once for the whole run"
        return False, 1, {"text_once_per_update": frozen, "text_shards": frozen}
    off = {}
    if not text.once_per_update:
        off["text_once_per_update"] = off["text_shards"] = "the per-micro-batch reference path was asked for"
    elif text.shards == 1:
        off["text_shards"] = "one process"
    return text.once_per_update, text.shards, off


def speedup_fields(training: tuple[bool, int, dict[str, str]] | None, prompts: ClassPrompts,
                   buckets_off: str | None) -> dict:
    """The results fields saying which text speed-ups a run used, and why the others were off.

    `training`: training_speedups of the run's trainer (None: no training step ran); `buckets_off`:
    why text_buckets.bucket_limit refused buckets for this model (None: it allowed them).
    """
    once, shards, off = training or (False, 1, dict.fromkeys(("text_once_per_update", "text_shards"),
                                                          "no training step ran"))
    off = dict(off)
    if prompts.buckets.count == 1:
        off["text_buckets"] = buckets_off or (f"length buckets would save under {MIN_SAVING:.0%} of the "
                                              f"{prompts.buckets.unbucketed_tokens} padded tokens")
    return dict(text_once_per_update=once, text_shards=shards, text_buckets=prompts.buckets.count,
                         text_speedups_off=off)
