"""What every method does, whatever it is: the one interface the core calls (never a method's name).

A method of the table (table.py) names its class (`Method.runtime`); `build` imports it and puts the
method on a loaded base, fresh or from a saved adapter. The result, an `Adapted`, is all the rest of
the code sees:

    the evaluator     text_features, image_embeddings, logits; zero_shot_view (the pretrained base);
                      tower_is_adapted (may the frozen vision tower's features be reused?); interpolated
                      (the model between the pretrained and the trained one: --interpolate)
    the trainer       fit (the training loop, a fit on frozen features, or nothing); parameter_groups,
                      regularizer, after_optimizer_step (a method's part of the shared step);
                      build_optimizer, build_schedule (from its entry's Optimization); extra_loss (terms
                      on the batch's embeddings, text features and logits), loss_parameters (weights
                      its own logits reach), after_epoch
    the run's record  fields (trainable and adapter weights, size, effective config); protocol (its part
                      of the protocol card); save / merged; card_snippet (the model card's loading
                      code, where PEFT's cannot load it)

Defaults here are the plain case (LoRA's): the base's text and image features with the family's
logits, the shared training loop, no parameter groups, no regulariser; a method overrides what it
changes. PEFT's tuners (peft_tuners.py), our own tuners (own_tuners.py), the methods with a step of
their own (eva.py, loftq.py, loraplus.py, adalora.py) and the baselines (baselines/) implement it.
"""
from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable

import torch
import torch.nn.functional as F

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.errors import UserError
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.methods.table import Method

if TYPE_CHECKING:
    from qlora_clip.data.items import FewShotDataset
    from qlora_clip.training.optimization import Optimization
    from qlora_clip.methods.baselines.features import FeatureBank
    from qlora_clip.training.precision import Precision
    from qlora_clip.training.result import TrainResult
    from qlora_clip.training.settings import TrainConfig


# Where a method's hyperparameters came from, as its protocol card says (run/card.py; `Adapted.protocol`).
PUBLISHED_DEFAULTS = "published defaults"
PUBLISHED_PER_DATASET = "published per-dataset values"


@dataclass
class FitInputs:
    """What a method may be fitted on, built by main.py: the run's draw and prompts, the shared training loop
    on the run's augmented train images, one epoch of those batches, and the frozen features."""
    data: FewShotDataset
    prompts: ClassPrompts
    precision: Precision
    # trainer.train on the run's train stream, with the run's TrainConfig or a stage's (`train` with its `steps` and
    # `first_step`: a method that trains in stages, each with its own optimizer and schedule)
    train_steps: Callable[..., TrainResult]
    one_epoch: Callable[[], list[torch.Tensor]]           # the augmented train batches of one epoch, one process
    features: Callable[[], FeatureBank]                   # the frozen feature sets (train views, val)
    train: TrainConfig | None = None                      # the run's training settings


@dataclass
class StepTensors:
    """What one micro-batch of a training step computed, for a method's extra loss terms (`Adapted.extra_loss`)."""
    images: torch.Tensor       # the micro-batch's (augmented) pixels
    embeddings: torch.Tensor   # image_embeddings(images): raw, not normalised
    text: torch.Tensor         # text_features of the run's class prompts (classes, dim), normalised
    logits: torch.Tensor       # logits(embeddings, text), float32
    labels: torch.Tensor
    step_images: int           # images in the whole step (all micro-batches and processes)


class Adapted:
    """A method on a loaded base. `model` is what computes (a PeftModel, or the base itself)."""
    # Whether its saved form loads without this library (a PEFT adapter, or tensors under the base's own names);
    # False: the model card shows this library's loader (run/modelcard.py).
    plain_load: bool = True

    def __init__(self, bundle: ClipBundle, settings: AdapterConfig, model: torch.nn.Module | None = None):
        self.bundle, self.settings = bundle, settings
        self.model = bundle.model if model is None else model
        self.family_logits = bundle.family.logits(self.model)

    @property
    def method(self) -> Method:
        return self.settings.method

    # --- building -------------------------------------------------------------------------------
    @classmethod
    def attach(cls, bundle: ClipBundle, settings: AdapterConfig) -> Adapted:
        """The method, fresh, on the loaded base."""
        return cls(bundle, settings)

    @classmethod
    def attach_plain(cls, bundle: ClipBundle, settings: AdapterConfig) -> Adapted:
        """The method on `bundle`'s model with a plain initialisation (none that reads data or rewrites weights):
        what methods/fit_check.py puts on the checkpoint's meta-device skeleton, so that a config or a layer the
        method refuses stops the run before anything loads."""
        return cls.attach(bundle, settings)

    @classmethod
    def load(cls, bundle: ClipBundle, settings: AdapterConfig, folder: Path) -> Adapted:
        """The method as saved in `folder` (--eval_only), frozen; UserError when it is not what the flags describe."""
        raise UserError(f"--eval_only: {settings.mode} saves nothing to evaluate later; run it without --eval_only")

    # --- what the evaluator and the trainer compute with ----------------------------------------
    def text_features(self, prompts: ClassPrompts) -> torch.Tensor:
        """Normalised class text features (classes, dim), in label order."""
        return prompts.features(self.model)

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """The vision tower's pooled, projected output (images, dim), not normalised."""
        return self.model.get_image_features(pixel_values=images).pooler_output

    def logits(self, embeddings: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Images x classes: the family's logits of the normalised image embeddings with the text features."""
        return self.family_logits(F.normalize(embeddings, dim=-1), text)

    def zero_shot_view(self) -> ContextManager:
        """While open, the model computes as the pretrained base (zero-shot)."""
        return contextlib.nullcontext()

    def tower_is_adapted(self, tower: str) -> bool:
        """Whether `tower` ('text_model' or 'vision_model') computes with weights the method trained or changed."""
        return False

    def interpolated(self, alpha: float) -> ContextManager:
        """While open, the model computes between the pretrained (alpha 0: what `zero_shot_view` computes) and the
        trained model (alpha 1: what it computes now), as WiSE-FT's (1 - alpha) theta_0 + alpha theta_1; the
        table's `Method.interpolation` says what that is for the method (--interpolate). Refused by default."""
        raise UserError(f"--interpolate: --mode {self.method.name} has no model between its pretrained and its trained "
                        "form; leave --interpolate out")

    # --- training -------------------------------------------------------------------------------
    def fit(self, inputs: FitInputs) -> TrainResult:
        """Train: by default the shared training loop (trainer.train) on the run's train images."""
        return inputs.train_steps(self)

    def initialize(self, batches: Iterable[torch.Tensor], prompts: ClassPrompts) -> None:
        """A data-driven initialisation before the first step (EVA's); most methods have none."""

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """What the training step updates: the model's parameters that require gradients, and any the method holds
        outside the model (2SFS's classifier)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def parameter_groups(self, params: list[torch.nn.Parameter], lr: float) -> list:
        """What the optimizer is built on: the trainable parameters, or groups with learning rates of their own."""
        return params

    def regularizer(self) -> torch.Tensor | None:
        """A term the method adds to each step's loss (AdaLoRA's), or None."""
        return None

    def after_optimizer_step(self, step: int) -> None:
        """Called after the optimizer step of `step` (0-based), before the gradients are cleared."""

    @property
    def optimization(self) -> Optimization:
        """The method's recipe: optimizer, schedule, batches, length (its table entry's)."""
        return self.method.optimization

    def build_optimizer(self, params: list, lr: float, device: torch.device) -> torch.optim.Optimizer:
        """The optimizer on `params` (the trainable weights, or parameter_groups'): the recipe's."""
        from qlora_clip.training.optimization import build_optimizer

        return build_optimizer(self.optimization, params, lr, device)

    def build_schedule(self, optimizer: torch.optim.Optimizer, total_steps: int,
                       steps_per_epoch: int | None = None) -> torch.optim.lr_scheduler.LRScheduler:
        """The learning-rate schedule, stepped after every optimizer step: the recipe's."""
        from qlora_clip.training.optimization import build_schedule

        return build_schedule(self.optimization, optimizer, total_steps, steps_per_epoch)

    def extra_loss(self, step: StepTensors) -> torch.Tensor | None:
        """Terms the method adds to a micro-batch's loss (KgCoOp's, PromptSRC's), or None. Its share of the step's
        loss, as the cross-entropy is: a term averaged over the step's images is summed over the micro-batch and
        divided by `step.step_images`; a term of the whole step is weighted by len(labels) / step_images."""
        return None

    def loss_parameters(self) -> list[torch.nn.Parameter]:
        """Weights the loss reaches other than through the image embeddings and the text features (a method that
        computes its logits with weights of its own: CoCoOp's per-image prompts); the step back-propagates to them
        directly. Most methods have none."""
        return []

    def after_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the training loop after the last step of (0-based) `epoch` of `epochs` (PromptSRC averages its
        prompts over epochs)."""

    # --- the run's record and outputs -----------------------------------------------------------
    def base_model(self) -> torch.nn.Module:
        """The base model inside `model`, its layers holding the values the run computed with."""
        return self.model

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def footprint_bytes(self) -> int:
        """Bytes of the weights the run computes with (`get_memory_footprint`: where the 4-bit base shows)."""
        return self.model.get_memory_footprint()

    def fields(self) -> dict[str, Any]:
        """The method's part of the results line (qlora_clip/run/schema.py names each field)."""
        return {}

    def protocol(self) -> dict[str, str]:
        """The method's own part of the run's protocol card (run/card.py), beyond what the flags say: where its
        hyperparameters came from (`hyperparameters`: PUBLISHED_DEFAULTS or PUBLISHED_PER_DATASET; `source`),
        and the validation data it chose any on itself (`validation`). Most methods: their table entry's defaults,
        nothing chosen on validation data."""
        return {"hyperparameters": PUBLISHED_DEFAULTS, "source": self.method.defaults.source}

    def save(self, folder: Path) -> None:
        """The method's files (--save_path)."""
        raise UserError(f"--save_path: {self.method.name} has nothing to save")

    def merged(self, base: torch.nn.Module) -> torch.nn.Module:
        """`base` (a full-precision copy holding the values the run held) with the method merged in."""
        raise UserError(f"--merge_export: {self.method.name} cannot be merged into the weights")

    @classmethod
    def card_snippet(cls, record: dict, base_model: str, folder: Path) -> str | None:
        """The model card's Python that loads the saved method and classifies, where plain PEFT / transformers
        cannot (None: the card's own, run/modelcard.py)."""
        return None


def require_saved(folder: Path, what: str, *names: str) -> None:
    """UserError for --eval_only when `folder` lacks one of the files a saved method is read from."""
    if not all((folder / name).exists() for name in names):
        raise UserError(f"--eval_only: no saved {what} at {folder} ({' and '.join(names)} expected). Train with the "
                        "same flags and --save_path first, or fix --save_path.")


def runtime_class(method: Method) -> type[Adapted]:
    """The class a table entry names (`module:Class`), imported now."""
    module, _, name = method.runtime.partition(":")
    return getattr(importlib.import_module(module), name)


def build(bundle: ClipBundle, settings: AdapterConfig, saved: Path | None = None) -> Adapted:
    """The method of `settings` on the loaded base: fresh, or the one saved in `saved` (--eval_only)."""
    cls = runtime_class(settings.method)
    return cls.load(bundle, settings, saved) if saved is not None else cls.attach(bundle, settings)


def load_adapted(backbone: str, settings: AdapterConfig, device: torch.device, compute_dtype: torch.dtype,
                 gradient_checkpointing: bool = False, saved: Path | None = None) -> Adapted:
    """A --backbone loaded as the method's entry asks (4-bit or not) and the method put on it: what main.py does,
    in one call, for the benchmark, the tests and notebooks."""
    from qlora_clip.backbones.loading import load_bundle, open_checkpoint

    bundle = load_bundle(open_checkpoint(backbone), settings.method.quantized, device, compute_dtype,
                         gradient_checkpointing)
    return build(bundle, settings, saved)
