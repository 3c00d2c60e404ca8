"""Data-parallel training across processes started by `accelerate launch` (one process: a no-op).

Every rank holds the whole model and trains on its share of each micro-batch. Each rank's loss is
its images' summed loss divided by the image count of the whole step (all ranks), so after the
micro-steps of an update the adapter gradients are summed across ranks and every rank takes the
step one process with the full batch would take, also for a short batch split unevenly. The
adapters are small (184,320 weights for ViT-B/16), so one all-reduce of a flat buffer per update
(the step's loss rides along) costs little. Evaluation is sharded the same way: each rank counts
its share of the test images and the counts are summed.
CLIP's two towers are called through get_text_features/get_image_features rather than one
forward(), which DistributedDataParallel would need; averaging gradients directly avoids that.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Distributed:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum_gradients(self, params: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        """Sum the adapter gradients (and the step's loss, returned) over the ranks."""
        if self.world == 1:
            return loss
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.flatten() for g in grads] + [loss.reshape(1).to(grads[0].dtype)])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n
        return flat[-1]

    def sum_counts(self, *counts: torch.Tensor) -> list[int]:
        """Integer counts summed over the ranks (one all-reduce), as Python ints."""
        stacked = torch.stack([c.to(torch.int64) for c in counts])
        if self.world > 1:
            torch.distributed.all_reduce(stacked, op=torch.distributed.ReduceOp.SUM)
        return stacked.tolist()

    def gather_count(self, count: int) -> list[int]:
        """Every rank's value of `count`, in rank order."""
        if self.world == 1:
            return [count]
        values = [None] * self.world
        torch.distributed.all_gather_object(values, count)
        return values


def resolve_device(name: str) -> torch.device:
    """--device: 'auto' is the GPU when one is visible."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_distributed(device_flag: str) -> Distributed:
    """One process unless launched with several (accelerate launch sets WORLD_SIZE)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed(rank=0, world=1, device=resolve_device(device_flag))
    from accelerate import PartialState  # sets up the process group (gloo on CPU, NCCL on GPUs)
    state = PartialState(cpu=device_flag == "cpu")
    return Distributed(rank=state.process_index, world=state.num_processes, device=state.device)
