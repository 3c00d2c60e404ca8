"""The training flags of a run (TrainConfig) and where it computes (ComputeConfig).

TrainConfig: the method's optimizer and schedule (its `Optimization`, training/optimization.py: CLIP-LoRA's
AdamW and cosine over n_iters x shots steps for the adapters) on batches of batch_size images, each split
into gradient_accumulation_steps micro-batches, on `loss`; `lr`, `n_iters` and `batch_size` are the
method's (methods/table.py) unless the flags say otherwise. Defaults are the published protocol's
(paper.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from qlora_clip import paper
from qlora_clip.flags import BOOKKEEPING, flag

COMPUTE_DTYPES = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class TrainConfig:
    loss: str = flag(paper.LOSS, "ce: cross-entropy over the classes, CLIP-LoRA's, for every family (the protocol's, "
                     "and what top-1 accuracy rewards); sigmoid: SigLIP's one-vs-rest loss with its logit bias, the "
                     "one it was pre-trained with (SigLIP and SigLIP 2 only)", group="training", choices=paper.LOSSES)
    lr: float | None = flag(None, "AdamW learning rate; default: the method's (2e-4 for the LoRA family, as CLIP-LoRA)",
                            group="training", type=float)
    n_iters: int | None = flag(None, "the run's length in the method's unit: optimizer steps per shot (total steps = "
                               "n_iters x shots) for CLIP-LoRA's schedule, epochs for the prompt learners' Dassl "
                               "schedule (docs/methods.md); 0 = evaluate only; default: the method's (500 for the "
                               "adapters, as CLIP-LoRA)", group="training", type=int)
    batch_size: int | None = flag(None, "images per optimizer step; default: the method's (32 for the adapters, as "
                                  "CLIP-LoRA)", group="training", type=int)
    gradient_accumulation_steps: int = flag(1, "split each batch into this many micro-batches: less memory, the same "
                                            "batch and loss weighting; the same update only with --dropout_rate 0 "
                                            "(dropout masks are drawn per micro-batch)", group="training")
    shots: int = 16  # the draw's (DataConfig.shots): total steps are n_iters x shots; not a flag here
    seed: int = 1    # the draw's (DataConfig.seed), which also seeds the batches; not a flag here
    # A stage of a method's own schedule (2SFS's two), not flags: its optimizer steps (None: n_iters x shots, the
    # whole run), and the run's step it starts at in the one stream of batches (inputs/sampler.py).
    steps: int | None = None
    first_step: int = 0

    @property
    def total_steps(self) -> int:
        """The run's optimizer steps under CLIP-LoRA's schedule, n_iters x shots, or a stage's own `steps` (a method's
        own Optimization counts its own: training/optimization.py, trainer.run_steps)."""
        return self.n_iters * self.shots if self.steps is None else self.steps


@dataclass(frozen=True)
class ComputeConfig:
    compute_dtype: str = flag("auto", "auto = fp16 autocast on CUDA, fp32 on CPU", group="training",
                              choices=COMPUTE_DTYPES)
    device: str = flag("auto", "where to compute: auto = CUDA when a GPU is visible, else the CPU", group="training",
                       role=BOOKKEEPING, choices=DEVICES)
