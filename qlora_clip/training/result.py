"""What training gives back: a record per optimizer step (for the tracking callbacks) and the run's result."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class StepRecord:
    """What one optimizer step did, handed to the `on_step` callbacks of trainer.train (e.g. run/tracking.py)."""
    step: int            # 1-based: the number of optimizer steps taken so far
    total_steps: int
    loss: float          # mean loss of the step's images
    lr: float            # the learning rate the step used
    seconds: float       # wall time of the step, input wait included
    images: int          # images the step trained on (all processes)
    grad_scale: float | None  # GradScaler's scale after the step (fp16 only)


StepCallback = Callable[[StepRecord], None]


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    images_seen: int = 0               # images through the model in training, all processes
    input_wait_seconds: float = 0.0    # time the loop waited for its next batch (this process)
    skipped_steps: int | None = None   # steps GradScaler skipped (fp16); None without a scaler
    peak_memory: dict = field(default_factory=dict)  # memory.PeakMemory.read() of the training loop
    # text_pass.training_speedups of the step's text pass; None when no training step was set up
    text_speedups: tuple[bool, int, dict[str, str]] | None = None
    fields: dict = field(default_factory=dict)  # what else the fit puts in the results line (a baseline's search)
