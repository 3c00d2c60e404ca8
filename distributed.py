"""Data-parallel training across processes started by `accelerate launch` (one process: a no-op).

Every rank holds the whole model and trains on its share of each micro-batch; after the
micro-steps of an update the adapter gradients are averaged across ranks, so every rank takes
the same optimizer step as one process with the full batch would. The adapters are small
(184,320 weights for ViT-B/16), so one all-reduce of a flat buffer per update costs little.
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

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.flatten() for g in grads])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n


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
