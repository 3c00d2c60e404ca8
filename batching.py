"""The stream of training batches, reproducible from (seed, position) alone.

Which images form micro-batch b, and how each is augmented, depend only on the run seed and b,
never on how many worker processes or data-parallel ranks load them, nor on whether the run was
interrupted. That is what makes `--resume` exact and lets a 2-process run match a 1-process one.
The sampler is the one place that knows how a batch splits into micro-batches and ranks.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

from errors import UserError

# Keeps the per-image seeds of different run seeds apart (images drawn per run stay far below it).
_SEED_STRIDE = 2**40


class TrainBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless micro-batches of (item index, augmentation seed), each rank taking its share.

    Epoch e is a permutation of the train set drawn from a generator seeded with (seed, e); it is
    cut into micro-batches of batch_size / accumulation_steps images, dropping a short last one so
    every micro-batch weighs the same (a train set smaller than one micro-batch is used whole every
    time). With `world` ranks, rank r takes images r, r + world, ... of each micro-batch.
    """

    def __init__(self, n_items: int, batch_size: int, accumulation_steps: int, seed: int,
                 rank: int = 0, world: int = 1):
        self.n_items = n_items
        self.micro_batches_per_step = accumulation_steps
        self.batch = min(batch_size // accumulation_steps, n_items)
        self.per_epoch = n_items // self.batch
        self.seed = seed
        self.rank = rank
        self.world = world
        self.start = 0  # first micro-batch to yield; set when resuming
        if self.batch % world:
            raise UserError(f"micro-batches of {self.batch} images cannot be shared equally by {world} "
                            "processes; choose --batch_size / --gradient_accumulation_steps (or, with fewer "
                            "train images than that, shots x classes) divisible by the process count")

    def start_at_step(self, step: int) -> None:
        """Continue the stream at optimizer step `step` (for --resume)."""
        self.start = step * self.micro_batches_per_step

    def micro_batch(self, b: int) -> list[tuple[int, int]]:
        epoch, within = divmod(b, self.per_epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n_items, generator=generator)[within * self.batch:(within + 1) * self.batch]
        first = b * self.batch
        return [(int(i), self.seed * _SEED_STRIDE + first + j) for j, i in enumerate(order)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        b = self.start
        while True:
            yield self.micro_batch(b)[self.rank::self.world]
            b += 1


class SeededAugmentation(Dataset):
    """Applies a random transform with a seed chosen per image, isolated from the global RNG."""

    def __init__(self, dataset: Dataset, transform: Callable):
        self.dataset = dataset  # an ImageDataset whose own transform is the identity
        self.transform = transform

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        image, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label

    def __len__(self) -> int:
        return len(self.dataset)
