"""A method's optimisation as data: its optimizer, its learning-rate schedule, its batches and its length.

Every method of the table carries one `Optimization` (methods/table.py, `Method.optimization`); the
training loop builds the optimizer and the schedule from it (methods/interface.Adapted.build_optimizer,
build_schedule), so a method with another recipe is a different value here, never a branch in the loop.
Two recipes exist:

    CLIP_LORA  CLIP-LoRA's (the protocol's, every adapter): AdamW (betas 0.9/0.999, weight decay 1e-2),
               a cosine from the learning rate to 1e-6 stepped after every optimizer step, over
               n_iters x shots steps of 32 images, the short last batch of an epoch kept as a step.
    dassl(...) Dassl's, which CoOp and the prompt learners built on it run (CoCoOp, KgCoOp, MaPLe,
               PromptSRC): SGD (momentum 0.9, weight decay 5e-4, Dassl's defaults
               dassl/config/defaults.py#L153-L156), the first epoch at a constant 1e-5, then a cosine
               over the epochs stepped once per epoch (ConstantWarmupScheduler around
               CosineAnnealingLR(T_max=epochs), dassl/optim/lr_scheduler.py#L35-L54, #L128-L131), the
               short last batch dropped (dassl/data/data_manager.py#L43), for a number of epochs.

`--n_iters` counts the run's length in the recipe's unit (`unit`): optimizer steps per shot for
CLIP-LoRA's (n_iters x shots steps), epochs for Dassl's (n_iters x the epoch's full batches);
`--n_iters` and `--batch_size` left out take the recipe's values for the run's protocol
(`iterations`, `batch_size`), resolved with the other method-defaulted flags (table.resolve_flags).

Nothing here imports torch at module level: the methods table (torch-free) holds these values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

from qlora_clip import paper

if TYPE_CHECKING:
    import torch

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "dassl")   # a cosine stepped per optimizer step, or Dassl's warm-up + per-epoch cosine
UNITS = ("steps_per_shot", "epochs")  # what --n_iters counts


@dataclass(frozen=True)
class Optimization:
    """How a method trains: optimizer, schedule, batches and length (the defaults are CLIP-LoRA's)."""
    optimizer: str = "adamw"
    weight_decay: float = paper.WEIGHT_DECAY
    betas: tuple[float, float] = paper.BETAS     # AdamW's
    momentum: float = 0.0                          # SGD's
    schedule: str = "cosine"
    min_lr: float = paper.MIN_LR                   # the per-step cosine's floor
    warmup_epochs: int = 0                         # Dassl's constant warm-up epochs
    warmup_lr: float = 0.0
    unit: str = "steps_per_shot"
    iterations: int = paper.N_ITERS                # --n_iters' default, in `unit`
    # --n_iters' default by --protocol where the method's configs differ per protocol (PromptSRC: 20 epochs
    # base-to-novel, 50 few-shot); a protocol not listed takes `iterations`.
    iterations_by_protocol: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    batch_size: int = paper.BATCH_SIZE            # --batch_size's default
    drop_last: bool = False                        # drop an epoch's short last batch (Dassl) or keep it as a step
    source: str = ""

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES or self.unit not in UNITS:
            raise ValueError(f"Optimization: optimizer {self.optimizer!r}, schedule {self.schedule!r}, unit "
                             f"{self.unit!r}: choose from {OPTIMIZERS}, {SCHEDULES}, {UNITS}")

    def default_iterations(self, protocol: str) -> int:
        """--n_iters when the run leaves it out."""
        return self.iterations_by_protocol.get(protocol, self.iterations)

    def total_steps(self, n_iters: int, shots: int, steps_per_epoch: int | None) -> int:
        """Optimizer steps of a run: n_iters x shots, or n_iters epochs of `steps_per_epoch` steps (the sampler's;
        None, where no data says it, counts one step per epoch)."""
        if self.unit == "steps_per_shot":
            return n_iters * shots
        return n_iters * (steps_per_epoch or 1)

    def describe(self) -> str:
        """The recipe in words (docs/methods.md)."""
        if self.optimizer == "adamw":
            optimizer = f"AdamW (betas {self.betas[0]:g}/{self.betas[1]:g}, weight decay {self.weight_decay:g})"
        else:
            optimizer = f"SGD (momentum {self.momentum:g}, weight decay {self.weight_decay:g})"
        if self.schedule == "cosine":
            schedule = f"cosine to {self.min_lr:g} per step"
        else:
            schedule = (f"{self.warmup_epochs} warm-up epoch(s) at {self.warmup_lr:g}, then a cosine per epoch")
        length = {"steps_per_shot": "steps per shot", "epochs": "epochs"}[self.unit]
        by = "".join(f", {n} {protocol}" for protocol, n in self.iterations_by_protocol.items())
        last = "short last batch dropped" if self.drop_last else "short last batch kept"
        return (f"{optimizer}; {schedule}; batch {self.batch_size} ({last}); {self.iterations} {length}"
                f"{' (' + by[2:] + ')' if by else ''}")


CLIP_LORA = Optimization(source="CLIP-LoRA (Zanella & Ben Ayed, CVPRW 2024): AdamW, cosine per step, 500 x shots "
                                "steps of 32 images")


def dassl(iterations: int, batch_size: int, source: str, iterations_by_protocol: Mapping[str, int] | None = None
          ) -> Optimization:
    """Dassl's recipe (SGD, warm-up epoch, cosine per epoch, short batch dropped) for `iterations` epochs."""
    return Optimization(optimizer="sgd", weight_decay=5e-4, momentum=0.9, schedule="dassl", warmup_epochs=1,
                        warmup_lr=1e-5, unit="epochs", iterations=iterations,
                        iterations_by_protocol=MappingProxyType(dict(iterations_by_protocol or {})),
                        batch_size=batch_size, drop_last=True, source=source)


def dassl_lr(epoch: int, base_lr: float, epochs: int, warmup_epochs: int, warmup_lr: float) -> float:
    """The learning rate of (0-based) `epoch` under Dassl's cosine with a constant warm-up.

    Dassl steps its scheduler once per epoch: the warm-up epochs run at `warmup_lr`, then epoch e
    runs at the cosine's value for e - warmup_epochs over `epochs` (CosineAnnealingLR(T_max=epochs),
    eta_min 0), so the cosine never reaches 0 within the run (ConstantWarmupScheduler in
    dassl/optim/lr_scheduler.py).
    """
    if epoch < warmup_epochs:
        return warmup_lr
    return 0.5 * base_lr * (1 + math.cos(math.pi * (epoch - warmup_epochs) / epochs))


def build_optimizer(optimization: Optimization, params: list, lr: float, device: torch.device
                    ) -> torch.optim.Optimizer:
    """The recipe's optimizer on the trainable weights, or on a method's parameter groups (LoRA+'s)."""
    import torch

    if optimization.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optimization.momentum, weight_decay=optimization.weight_decay)
    # Fused AdamW updates all adapter tensors (about 150) in one kernel instead of a loop of small ones.
    return torch.optim.AdamW(params, lr=lr, betas=optimization.betas, weight_decay=optimization.weight_decay,
                             fused=device.type == "cuda")


def build_schedule(optimization: Optimization, optimizer: torch.optim.Optimizer, total_steps: int,
                   steps_per_epoch: int | None = None) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's schedule, stepped once per optimizer step: CLIP-LoRA's cosine over `total_steps`, or Dassl's
    epoch values held for each epoch's `steps_per_epoch` steps (which is stepping once per epoch)."""
    import torch

    if optimization.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1),
                                                          eta_min=optimization.min_lr)
    per_epoch = max(steps_per_epoch or 1, 1)
    epochs = max(-(-total_steps // per_epoch), 1)
    base = [group["lr"] for group in optimizer.param_groups]

    def factor(group: int):
        def at(step: int) -> float:
            lr = dassl_lr(step // per_epoch, base[group], epochs, optimization.warmup_epochs, optimization.warmup_lr)
            return lr / base[group]
        return at

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(i) for i in range(len(base))])
