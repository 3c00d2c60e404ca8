"""The training loop: the method's optimizer and schedule on its weights (CLIP-LoRA's AdamW and cosine over
n_iters x shots optimizer steps for the adapters; Dassl's SGD over epochs for the prompt learners).

The protocol (docs/protocol.md, "Training"): the method's optimizer and schedule (its entry's Optimization,
qlora_clip/training/optimization.py; CLIP-LoRA's for every adapter), class prompts
re-encoded with gradients at every step when the text tower is adapted, by any method (once per
step, however the step is split: qlora_clip/training/text_pass.py), one optimizer step per batch on the mean
loss of that batch's images (a short last batch of an epoch included). A batch may be split into micro-batches
(gradient accumulation) and across processes (training/distributed.py): each micro-batch's summed loss is
divided by the image count of the whole step, so neither changes the batch or its loss weighting;
the update is the same up to float rounding with dropout 0, while dropout masks are drawn per
micro-batch (docs/protocol.md, "Batches").
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Callable, Iterable, Sequence

import torch
from tqdm import tqdm

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.errors import UserError
from qlora_clip.inputs.loaders import TrainStream
from qlora_clip.methods.interface import Adapted, StepTensors
from qlora_clip.training.checkpointing import TrainCheckpoint
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.losses import summed_loss
from qlora_clip.training import optimization
from qlora_clip.training.memory import PeakMemory
from qlora_clip.training.precision import Precision
from qlora_clip.training.result import StepCallback, StepRecord, TrainResult
from qlora_clip.training.settings import TrainConfig
from qlora_clip.training.text_pass import PerUpdateText, TextPass, training_speedups

log = logging.getLogger(__name__)


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite; the run stops without a results line."""


def build_optimizer(params: list, lr: float, device: torch.device) -> torch.optim.AdamW:
    """CLIP-LoRA's AdamW on the trainable (adapter) weights, or on a method's parameter groups (LoRA+'s)."""
    return optimization.build_optimizer(optimization.CLIP_LORA, params, lr, device)


def build_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine annealing from the learning rate to MIN_LR over the run's steps (CLIP-LoRA's)."""
    return optimization.build_schedule(optimization.CLIP_LORA, optimizer, total_steps)


def _no_mark(phase: str) -> None:
    pass


def run_steps(adapted: Adapted, config: TrainConfig, steps_per_epoch: int | None) -> int:
    """The optimizer steps this call of the loop takes: a stage's own (`config.steps`, 2SFS), else the method's
    recipe's count (n_iters x shots, or n_iters epochs of the sampler's steps)."""
    if config.steps is not None:
        return config.steps
    return adapted.optimization.total_steps(config.n_iters, config.shots, steps_per_epoch)


class TrainStep:
    """One optimizer step on a batch's micro-batches: the step every run takes, and the benchmark times.

    What it computes with is the method's (methods/interface.Adapted): its text features, image
    embeddings and logits, its parameter groups, regulariser and after-step hook; for LoRA these are
    the base's features, the family's logits and nothing more. The class prompts' features are
    encoded with gradients when the text tower is adapted (`Adapted.tower_is_adapted`; caching them
    would silently freeze it): once per step, this rank's share of them gathered over the processes,
    their gradient summed over the micro-batches and back-propagated once at the end
    (text_pass.PerUpdateText; `text_pass` lets the benchmark time another way). Per micro-batch: the
    images' embeddings, the logits, the loss (`config.loss`: the micro-batch's summed loss over the
    step's image count), and the backward, first to the two feature sets and then through the image
    tower (the same gradients as one loss.backward(), with each tower's share visible to `mark`).
    Then the gradients are summed over processes and the optimizer, scaler and schedule step.
    """

    def __init__(self, adapted: Adapted, prompts: ClassPrompts, config: TrainConfig, precision: Precision,
                 dist: Distributed, text_pass: Callable[[ClassPrompts, Distributed], TextPass] = PerUpdateText,
                 steps_per_epoch: int | None = None):
        self.adapted, self.model, self.prompts, self.precision, self.dist = adapted, adapted.model, prompts, \
            precision, dist
        self.params = adapted.trained_parameters()
        # The method's recipe (its table entry's Optimization: CLIP-LoRA's AdamW and per-step cosine, or Dassl's).
        self.optimizer = adapted.build_optimizer(adapted.parameter_groups(self.params, config.lr), config.lr,
                                                 precision.device)
        self.scheduler = adapted.build_schedule(self.optimizer, run_steps(adapted, config, steps_per_epoch),
                                                steps_per_epoch)
        self.direct = adapted.loss_parameters()
        self.scaler = precision.grad_scaler()
        self.loss = config.loss
        self.cached_text = None
        self.text: TextPass | None = None
        if adapted.tower_is_adapted("text_model"):  # the one decision on the text tower
            self.text = text_pass(prompts, dist)
        else:
            self.model.eval()
            with torch.no_grad(), precision.autocast():
                self.cached_text = adapted.text_features(prompts)
        self.model.train()

    def __call__(self, micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor] | None], step_images: int,
                 mark: Callable[[str], None] = _no_mark) -> tuple[torch.Tensor, float]:
        """Train on one step's micro-batches (None: this rank has no image in it); return the step's
        loss (a 0-d device tensor, summed over processes: no host sync) and the learning rate it used.

        `mark(phase)` is called after each phase ('text', 'image', 'loss', 'image_backward',
        'text_backward', 'optimizer'), for the benchmark's timing; it costs nothing otherwise.
        """
        adapted = self.adapted
        step_loss = torch.zeros((), device=self.precision.device)
        if self.text is not None:
            with self.precision.autocast():
                self.text.start(adapted.text_features)  # every rank, images or not: it may join a collective
            mark("text")
        for batch in micro_batches:
            if batch is None:
                continue
            images, labels = batch
            with self.precision.autocast():
                text = self.cached_text if self.text is None else self.text.features(adapted.text_features)
                mark("text")
                image = adapted.image_embeddings(images)
                mark("image")
                step_logits = adapted.logits(image, text).float()
                loss = summed_loss(self.loss, step_logits, labels) / step_images
                extra = adapted.extra_loss(StepTensors(images, image, text, step_logits, labels, step_images))
                if extra is not None:
                    loss = loss + extra
            # A tower without adapters (cached prompts, or a frozen vision tower) gets no backward.
            towers = [(name, features) for name, features in (("image", image), ("text", text))
                      if features.requires_grad]
            scaled = self.scaler.scale(loss)
            if self.direct:  # weights the method's own logits reach directly (CoCoOp's per-image prompts)
                torch.autograd.backward(scaled, inputs=self.direct, retain_graph=bool(towers))
            grads = torch.autograd.grad(scaled, [features for _, features in towers]) if towers else ()
            mark("loss")
            for (name, features), grad in zip(towers, grads):
                if name == "text":
                    self.text.backward(features, grad)
                else:
                    features.backward(grad)
                mark(f"{name}_backward")
            step_loss += loss.detach()
            penalty = adapted.regularizer()
            if penalty is not None:  # once per step, shared out over its micro-batches like the loss
                penalty = penalty * (len(labels) / step_images)
                self.scaler.scale(penalty).backward()
                step_loss += penalty.detach()
        if self.text is not None:
            self.text.finish()
            mark("text_backward")
        step_loss = self.dist.sum_gradients(self.params, step_loss)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        adapted.after_optimizer_step(self.scheduler.last_epoch)  # before the gradients are cleared
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        mark("optimizer")
        return step_loss, lr


def train(adapted: Adapted, stream: TrainStream, prompts: ClassPrompts, config: TrainConfig,
          precision: Precision, dist: Distributed | None = None, checkpoint: TrainCheckpoint | None = None,
          resume: bool = False, desc: str = "train", on_step: Sequence[StepCallback] = ()) -> TrainResult:
    """Train the method's trainable weights on the stream's micro-batches.

    `resume` continues from `checkpoint`;
    each of `on_step` is called after every optimizer step with its StepRecord.
    """
    dist = dist or Distributed(rank=0, world=1, device=precision.device)
    sampler = stream.sampler
    total_steps = run_steps(adapted, config, sampler.steps_per_epoch)
    epochs = -(-total_steps // sampler.steps_per_epoch)
    device = precision.device
    model = adapted.model
    train_step = TrainStep(adapted, prompts, config, precision, dist, steps_per_epoch=sampler.steps_per_epoch)
    optimizer, scheduler, scaler = train_step.optimizer, train_step.scheduler, train_step.scaler
    # Without loss scaling a non-finite loss ruins the weights: stop. With it (fp16), GradScaler
    # skips the steps whose gradients overflow, and we count them.
    stop_on_non_finite = not scaler.is_enabled()

    saved = checkpoint.load() if checkpoint is not None and resume else None
    first_step = saved["step"] if saved else 0
    losses: list = list(saved["losses"]) if saved else []  # floats, then 0-d tensors (no per-step sync)
    sampler.start_at_step(first_step)
    batches = iter(stream)
    if saved:
        checkpoint.restore(saved, model, optimizer, scheduler, scaler)

    memory = PeakMemory(device)
    memory.reset()
    model.train()
    start = time.perf_counter() - (saved["seconds"] if saved else 0.0)
    unchecked = first_step  # losses[unchecked:] have not been checked for finiteness yet
    with warnings.catch_warnings():
        # A step GradScaler skips calls the scheduler without the optimizer; that is counted, not a bug.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        for step in tqdm(range(first_step, total_steps), desc=desc, leave=False,
                         disable=None if dist.is_main else True, initial=first_step, total=total_steps):
            step_start = time.perf_counter()
            step_images = sampler.step_images(step)
            micro_batches = (next(batches) for _ in range(sampler.micro_batches_per_step))
            step_loss, lr = train_step(micro_batches, step_images)
            losses.append(step_loss)
            if stop_on_non_finite and len(losses) - 1 > unchecked:
                # The previous step's loss: by now the device has finished it, so reading it
                # does not stall the step just queued.
                unchecked = _check_finite(losses, unchecked, len(losses) - 1, total_steps, config)
            if on_step:
                record = StepRecord(step=step + 1, total_steps=total_steps, loss=float(step_loss), lr=lr,
                                    seconds=time.perf_counter() - step_start, images=step_images,
                                    grad_scale=scaler.get_scale() if scaler.is_enabled() else None)
                for callback in on_step:
                    callback(record)
            if (step + 1) % sampler.steps_per_epoch == 0 or step + 1 == total_steps:
                adapted.after_epoch(step // sampler.steps_per_epoch, epochs)
            if checkpoint is not None and dist.is_main and checkpoint.due(step + 1, total_steps):
                if stop_on_non_finite:
                    unchecked = _check_finite(losses, unchecked, len(losses), total_steps, config)
                checkpoint.save(step + 1, model, optimizer, scheduler, scaler, _as_floats(losses),
                                time.perf_counter() - start)
    if stop_on_non_finite:
        _check_finite(losses, unchecked, len(losses), total_steps, config)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return TrainResult(steps=total_steps, seconds=seconds, losses=_as_floats(losses),
                       images_seen=sampler.images_seen(total_steps), input_wait_seconds=stream.input_wait_seconds,
                       skipped_steps=total_steps - _optimizer_steps(optimizer) if scaler.is_enabled() else None,
                       peak_memory=memory.read(),
                       text_speedups=training_speedups(train_step.text) if total_steps else None)


def _as_floats(losses: list) -> list[float]:
    return [float(loss) for loss in losses]


def _check_finite(losses: list, first: int, end: int, total_steps: int, config: TrainConfig) -> int:
    """Raise NonFiniteLoss naming the first of losses[first:end] that is NaN or infinite; return end."""
    for index in range(first, end):
        value = float(losses[index])
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"step {index + 1} of {total_steps}: the training loss is {value}, so the adapter weights are "
                f"no longer usable; the run stops without writing a results line (checkpoints already "
                f"written are kept). The usual cause is a learning rate too high for this setting: try a "
                f"lower --lr than {config.lr:g}; with --compute_dtype fp16 or bf16, also try fp32.")
    return end


def _optimizer_steps(optimizer: torch.optim.Optimizer) -> int:
    """Steps the optimizer really took (GradScaler skips the step when gradients overflow)."""
    state = next((s for s in optimizer.state.values() if "step" in s), None)
    return int(state["step"]) if state is not None else 0
