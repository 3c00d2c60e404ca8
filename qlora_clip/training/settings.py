"""The training flags of a run (TrainConfig) and where it computes (ComputeConfig).

TrainConfig: AdamW on the method's weights, cosine schedule over n_iters x shots steps of
batch_size images, each split into gradient_accumulation_steps micro-batches, on `loss`; `lr` is
the method's (methods/table.py) unless --lr says otherwise. Defaults are the published protocol's
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
    n_iters: int = flag(paper.N_ITERS, "optimizer steps per shot: total steps = n_iters x shots (0 = evaluate only)",
                        group="training")
    batch_size: int = flag(paper.BATCH_SIZE, "images per optimizer step", group="training")
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
        return self.n_iters * self.shots if self.steps is None else self.steps


@dataclass(frozen=True)
class ComputeConfig:
    compute_dtype: str = flag("auto", "auto = fp16 autocast on CUDA, fp32 on CPU", group="training",
                              choices=COMPUTE_DTYPES)
    device: str = flag("auto", "where to compute: auto = CUDA when a GPU is visible, else the CPU", group="training",
                       role=BOOKKEEPING, choices=DEVICES)
