"""The stream of training batches, reproducible from (seed, position) alone.

CLIP-LoRA's batches (docs/protocol.md, "Batches"): each epoch is a fresh shuffle of the train set
cut into batches of `batch_size` images, its short last batch kept as a step of its own (37 images
at batch 32: steps of 32, 5, 32, 5, ...); a train set smaller than one batch is one batch. The prompt
learners' recipe (Dassl's) drops the short last batch instead (`drop_last`).

Which images form step s, and how each is augmented, depend only on the run seed and s, never on
how many worker processes or data-parallel ranks load them, nor on whether the run was
interrupted: that makes `--resume` exact and lets N processes reproduce the 1-process update.
This sampler is the one place that knows how a step's batch splits into micro-batches
(gradient accumulation) and across ranks; the trainer only asks it how many images a step has.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

# Keeps the per-image seeds of different run seeds apart (images drawn per run stay far below it).
_SEED_STRIDE = 2**40


def split_sizes(n: int, parts: int) -> list[int]:
    """Sizes of `parts` contiguous chunks of n items, as equal as possible, larger ones first."""
    base, extra = divmod(n, parts)
    return [base + (i < extra) for i in range(parts)]


class TrainBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless micro-batches of (item index, augmentation seed) for one rank.

    Step s is batch `within` of epoch e (s = e * steps_per_epoch + within); epoch e's order is a
    permutation drawn from a generator seeded with (seed, e). The step's images are cut into
    `accumulation_steps` contiguous micro-batches (sizes as equal as possible), and rank r of
    `world` takes images r, r + world, ... of each. A micro-batch may be empty on some rank (a
    short batch shared by many ranks); the loader then yields None for it.
    """

    def __init__(self, n_items: int, batch_size: int, accumulation_steps: int, seed: int,
                 rank: int = 0, world: int = 1, offset: int = 0, drop_last: bool = False):
        if n_items < 1:
            raise ValueError("a train set needs at least one image")
        self.n_items = n_items
        self.batch_size = min(batch_size, n_items)
        self.micro_batches_per_step = accumulation_steps
        # `drop_last` (Dassl's loader, the prompt learners' recipe): an epoch is its full batches only, the short
        # last one left out (a set smaller than one batch is still one batch).
        self.steps_per_epoch = n_items // self.batch_size if drop_last else -(-n_items // self.batch_size)
        self.epoch_items = self.steps_per_epoch * self.batch_size if drop_last else n_items
        self.seed = seed
        self.rank = rank
        self.world = world
        self.start = 0  # first step to yield; set when resuming
        # The run's step that this stream's step 0 is: a later stage of a method's training (2SFS's classifier)
        # continues the run's one stream of batches instead of drawing its first steps again.
        self.offset = offset

    def start_at_step(self, step: int) -> None:
        """Continue the stream at optimizer step `step` (for --resume)."""
        self.start = step

    def step_images(self, step: int) -> int:
        """Images in step `step`, all micro-batches and ranks together."""
        within = (self.offset + step) % self.steps_per_epoch
        return min(self.batch_size, self.epoch_items - within * self.batch_size)

    def images_seen(self, steps: int) -> int:
        """Images through the model in the first `steps` steps (all ranks)."""
        return self._seen(self.offset + steps) - self._seen(self.offset)

    def _seen(self, steps: int) -> int:
        """Images in the run's first `steps` steps."""
        epochs, within = divmod(steps, self.steps_per_epoch)
        return epochs * self.epoch_items + within * self.batch_size

    def step_batch(self, step: int) -> list[tuple[int, int]]:
        """The whole batch of step `step`: (item index, augmentation seed) per image."""
        step += self.offset
        epoch, within = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        first = within * self.batch_size
        order = torch.randperm(self.n_items, generator=generator)[first:first + self.batch_size]
        position = self._seen(step)  # of the step's first image in the whole stream
        return [(int(i), self.seed * _SEED_STRIDE + position + j) for j, i in enumerate(order)]

    def micro_batches(self, step: int) -> list[list[tuple[int, int]]]:
        """This rank's share of each micro-batch of step `step`."""
        batch = self.step_batch(step)
        shares, start = [], 0
        for size in split_sizes(len(batch), self.micro_batches_per_step):
            shares.append(batch[start:start + size][self.rank::self.world])
            start += size
        return shares

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        while True:
            yield from self.micro_batches(step)
            step += 1
