"""Which training step's model a run reports: the last one, or the best on the few-shot val images (--select_on).

`--select_on last` (the default, CLIP-LoRA's protocol) reports the model after the last step.
`--select_on val` evaluates the model on the run's few-shot val images every --select_every steps
and after the last one, keeps a copy of the trainable weights whenever the val accuracy beats the
best so far (ties: the lower val NLL, then the earlier step), and puts the best copy back after
training, so the test evaluation, the saved adapter and every figure of the line are that step's
model. It is a callback of the training loop (trainer.train's `on_step`) and a restore afterwards:
the step itself is untouched. The test set is never read to choose (tests/test_evaluation_selection.py
fails the run if the test images are evaluated before training ends).

The val images are the draw's own (datasets' val split, as CLIP-LoRA samples it), preprocessed as
the test images are; with a frozen vision tower their embeddings are encoded once. The checks run
inside the training loop, so their time is part of `train_seconds`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from qlora_clip.errors import UserError
from qlora_clip.evaluation.evaluator import EvalSet, Evaluator
from qlora_clip.evaluation.settings import SELECTION_CHECKS, EvalConfig
from qlora_clip.training.result import StepRecord

log = logging.getLogger("qlora-clip")


def check_val_images(settings: EvalConfig, val_images: int, dataset: str) -> None:
    """--select_on val needs val images; said before anything loads."""
    if settings.select_on == "val" and val_images == 0:
        raise UserError(f"--select_on val: this draw of --dataset {dataset} has no val images to choose on; use "
                        "--select_on last")


def select_every(given: int, total_steps: int) -> int:
    """Steps between val checks: --select_every (`given`), or SELECTION_CHECKS checks spread over the run."""
    return given or max(1, math.ceil(total_steps / SELECTION_CHECKS))


@dataclass
class Check:
    step: int
    val_acc: float
    val_nll: float


@dataclass
class ModelSelection:
    """The rule, the checks made, and the best trainable state (select_on val); nothing to do for the last step."""
    rule: str                       # EvalConfig.select_on
    total_steps: int
    every: int | None = None        # steps between val checks (select_on val)
    val_images: int = 0
    evaluate: Callable[[], object] | None = None  # one pass over the val images (select_on val)
    checks: list[Check] = field(default_factory=list)
    best: Check | None = None
    _state: dict[str, torch.Tensor] | None = None

    @classmethod
    def for_run(cls, settings: EvalConfig, total_steps: int, evaluator: Evaluator,
                val_set: Callable[[], EvalSet], val_images: int) -> ModelSelection:
        """The run's selection; the val set is built (its images prepared) only when the first check needs it."""
        if settings.select_on != "val":
            return cls(settings.select_on, total_steps)
        built: list[EvalSet] = []

        def evaluate():
            if not built:
                built.append(val_set())
            evaluator.accuracy(built[0], desc="val")
            return built[0].last
        return cls(settings.select_on, total_steps, settings.select_every or None, val_images, evaluate)

    def callbacks(self, adapted) -> list[Callable[[StepRecord], None]]:
        """What the training loop calls after every step: the run's step count as the loop counts it (a method's
        recipe may count epochs: the prompt learners'), and a val check where one is due."""
        def on_step(record: StepRecord) -> None:
            self.total_steps = record.total_steps
            if self.evaluate is None:
                return
            if self.every is None:  # spread over the steps the loop takes
                self.every = select_every(0, record.total_steps)
            if record.step % self.every and record.step != record.total_steps:
                return
            evaluation = self.evaluate()
            adapted.model.train()  # the evaluation switched the model to eval mode; the next step trains
            check = Check(record.step, evaluation.accuracy, evaluation.calibration.nll)
            self.checks.append(check)
            if self.best is None or (check.val_acc, -check.val_nll) > (self.best.val_acc, -self.best.val_nll):
                self.best = check
                self._state = {name: p.detach().clone() for name, p in adapted.model.named_parameters()
                               if p.requires_grad}
            log.info("step %d: val accuracy %.2f%% (best %.2f%% at step %d)", check.step, check.val_acc,
                     self.best.val_acc, self.best.step)
        return [on_step]

    def restore(self, adapted) -> None:
        """The best checked state back into the trainable weights (select_on val)."""
        if self._state is None:
            return
        params = dict(adapted.model.named_parameters())
        with torch.no_grad():
            for name, value in self._state.items():
                params[name].copy_(value)
        log.info("--select_on val: the model of step %d (val accuracy %.2f%%) is the one reported", self.best.step,
                 self.best.val_acc)
        self._state = None

    @property
    def selected_step(self) -> int:
        """The step whose model the run reports."""
        return self.best.step if self.best is not None else self.total_steps

    def card(self) -> dict:
        """The protocol card's selection part (run/card.py)."""
        if self.evaluate is None:
            return {"selection": "last step", "selected_step": self.selected_step}
        return {"selection": "best val accuracy", "select_every": self.every, "selected_step": self.selected_step,
                "val_checks": [[c.step, c.val_acc] for c in self.checks]}
