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
The class prompts' text pass is sharded too (text_pass.py): `gather_shares` puts every rank's
share of the features together, with a backward that hands each rank the gradient of all ranks'
losses for its own share.
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

    def gather_shares(self, share: torch.Tensor) -> torch.Tensor:
        """Every rank's `share` (equal shapes), concatenated in rank order; autograd flows back to each
        rank's own share as the sum of every rank's gradient of the result."""
        return _GatherShares.apply(share) if self.world > 1 else share

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


class _GatherShares(torch.autograd.Function):
    """all_gather forward; backward: all_reduce (sum) of the gathered result's gradient, own rows kept.

    Each rank's loss depends on every share, so the gradient of the sum of the ranks' losses with
    respect to a share is the sum of every rank's gradient for it. An all-reduce of the whole
    gradient (the features of 1,000 prompts: 2 MB for ViT-B/16) works on every backend, gloo
    included; torch.distributed.nn's all_gather does the same with an all-to-all but is deprecated.
    """

    @staticmethod
    def forward(ctx, share: torch.Tensor) -> torch.Tensor:
        world, ctx.rank, ctx.rows = torch.distributed.get_world_size(), torch.distributed.get_rank(), share.shape[0]
        parts = [torch.empty_like(share) for _ in range(world)]
        torch.distributed.all_gather(parts, share.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad, op=torch.distributed.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


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
