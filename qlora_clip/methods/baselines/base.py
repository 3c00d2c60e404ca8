"""What every baseline is given and gives back, and `FeatureBaseline`: a baseline as a method of the table.

A baseline is fitted on the frozen base's image features (features.FeatureBank: train views and
val, each encoded once and cached) with its paper's hyperparameters; it is evaluated like every
method, by the shared evaluator, through `Fitted.predict` on the test images' embeddings.
`FeatureBaseline` is the methods/interface.Adapted that does this for each of them: its subclass
names the `Baseline` (what feature sets it needs, how it fits).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator

import torch
import torch.nn.functional as F

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.errors import UserError
from qlora_clip.evaluation.metrics import accuracy_percent, count_correct
from qlora_clip.methods.baselines.features import FeatureBank
from qlora_clip.methods.baselines.text import prompt_features
from qlora_clip.methods.baselines.views import ViewSet
from qlora_clip.methods.interface import PUBLISHED_PER_DATASET, Adapted, FitInputs
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.training.memory import PeakMemory
from qlora_clip.training.precision import Precision
from qlora_clip.training.result import TrainResult

Logits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Needs:
    """The feature sets a baseline trains or searches on, encoded (or read) before its fit is timed."""
    val: bool = False             # the few-shot val images, centre-cropped
    train_centre: bool = False    # the train images, centre-cropped (no augmentation)
    views: tuple[ViewSet, ...] = ()


@dataclass
class BaselineInputs:
    """A run's data for a baseline: class names, the run's prompts' text features, the frozen features."""
    dataset: str
    shots: int
    seed: int
    classnames: list[str]
    text: torch.Tensor            # (classes, dim) normalised features of the run's prompts (--template)
    bank: FeatureBank
    model: torch.nn.Module        # the frozen base: CoOp and the ensembles encode text with it
    tokenizer: object
    precision: Precision
    family_logits: Logits         # the family's logits of normalised image features and text features
    prompts: ClassPrompts | None = None  # the run's class prompts, tokenised by the family's rules

    @property
    def device(self) -> torch.device:
        return self.precision.device

    def on_device(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(self.device, torch.float32)

    def zero_shot_logits(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The family's logits (CLIP's 100 x cosine) of raw image embeddings with text features."""
        return self.family_logits(F.normalize(features, dim=-1), text)


@dataclass
class Fitted:
    """A fitted baseline: logits for image embeddings, and what the results line says about it."""
    # (raw image embeddings (n, dim) on the device, the class text features) -> logits; a baseline whose
    # weights are the train classes' (unseen_classes False in the table) ignores the text.
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    params: dict                   # the hyperparameters it ran with, searched values included
    trainable_params: int = 0      # weights an optimiser updated
    added_params: int = 0          # weights it holds beside the base's (a cache model's keys and values count)
    steps: int = 0                 # optimiser steps
    images_seen: int = 0           # train features through the method's training, all epochs
    losses: list[float] = field(default_factory=list)
    # The class text features it classifies with, for any classes (CoOp's learned context, an ensemble's
    # templates); None: the prompts' own features.
    text: Callable[[ClassPrompts], torch.Tensor] | None = None
    # What --save_path writes of a fit that can be saved (methods/baselines/saved_fit.py): its tensors, and the
    # class prompts its rows were fitted on, in row order.
    saved: dict[str, torch.Tensor] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Baseline:
    needs: Callable[[str, int], Needs]          # (dataset, shots) -> its feature sets
    fit: Callable[[BaselineInputs], Fitted]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent, counted (evaluation/metrics.py)."""
    return accuracy_percent(int(count_correct(logits, labels.to(logits.device))), len(labels))


class FeatureBaseline(Adapted):
    """A baseline on the frozen base: fitted on its image features, evaluated through `Fitted.predict`."""
    baseline: Baseline  # the subclass's

    def __init__(self, bundle: ClipBundle, settings: AdapterConfig):
        super().__init__(bundle, settings)
        self.model.requires_grad_(False)
        self.model.eval()
        self.fitted: Fitted | None = None
        self.features: dict = {}
        self._zero_shot = False
        self._alpha: float | None = None  # --interpolate's, while `interpolated` is open
        self._searched_on_val = False

    # --- evaluation -----------------------------------------------------------------------------
    def text_features(self, prompts: ClassPrompts) -> torch.Tensor:
        if self._zero_shot or self.fitted is None or self.fitted.text is None:
            return super().text_features(prompts)
        return self.fitted.text(prompts)

    def logits(self, embeddings: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self._zero_shot or self.fitted is None:
            return super().logits(embeddings, text)
        fitted = self.fitted.predict(embeddings.float(), text.float())
        if self._alpha is None:
            return fitted
        # Exact at the ends: 1 x zero-shot + 0 x fitted is the zero-shot logits, 0 x zero-shot + 1 x fitted the fitted.
        return (1 - self._alpha) * super().logits(embeddings, text).float() + self._alpha * fitted

    @contextlib.contextmanager
    def interpolated(self, alpha: float) -> Iterator[None]:
        """The logits (1 - alpha) x zero-shot + alpha x fitted (the table's INTERPOLATES_LOGITS): both classify the
        same frozen features, with the run's prompts' text features."""
        if self.fitted is not None and self.fitted.text is not None:
            raise UserError(f"--interpolate: --mode {self.method.name} classifies with text features of its own, so "
                            "its logits and the zero-shot ones do not share a classifier to interpolate")
        self._alpha = alpha
        try:
            yield
        finally:
            self._alpha = None

    def zero_shot_view(self) -> ContextManager:
        return self._zero_shot_only()

    @contextlib.contextmanager
    def _zero_shot_only(self) -> Iterator[None]:
        self._zero_shot = True
        try:
            yield
        finally:
            self._zero_shot = False

    # --- fitting --------------------------------------------------------------------------------
    def fit(self, inputs: FitInputs) -> TrainResult:
        """Encode (or read) the feature sets it needs, then fit, timed apart: the fit's time and peak memory are
        its training's (`train_seconds`, `peak_memory_mb`), the features' in `baseline_features`."""
        data, bank, precision = inputs.data, inputs.features(), inputs.precision
        needs = self.baseline.needs(data.name, data.shots)
        self._searched_on_val = needs.val
        if needs.val and not data.val:
            raise UserError(f"--mode {self.method.name} searches its hyperparameters on the val images, and this "
                            f"draw of --dataset {data.name} has none")
        if needs.val:
            bank.val()
        if needs.train_centre:
            bank.train_centre()
        for views in needs.views:
            bank.train_views(views)
        baseline_inputs = BaselineInputs(
            data.name, data.shots, data.seed, data.classnames,
            prompt_features(self.model, self.bundle.tokenizer, inputs.prompts.prompts, precision), bank, self.model,
            self.bundle.tokenizer, precision, self.family_logits, inputs.prompts)
        memory = PeakMemory(precision.device)
        memory.reset()
        start = time.perf_counter()
        self.fitted = self.baseline.fit(baseline_inputs)
        if precision.device.type == "cuda":
            torch.cuda.synchronize(precision.device)
        seconds = time.perf_counter() - start
        self.features = bank.describe()
        fitted = self.fitted
        return TrainResult(steps=fitted.steps, seconds=seconds, losses=fitted.losses, images_seen=fitted.images_seen,
                           peak_memory=memory.read())

    # --- the record -----------------------------------------------------------------------------
    def protocol(self) -> dict[str, str]:
        """Its paper's values (per dataset where its paper has a table of them), and the val images where it
        searched some of them (the search is its paper's)."""
        params = self.fitted.params if self.fitted else {}
        card = super().protocol()
        if "config_of" in params:  # its paper's table of per-dataset values (Tip-Adapter's configs/<dataset>.yaml)
            card["hyperparameters"] = PUBLISHED_PER_DATASET
            card["source"] += f"; the values of {params['config_of']}"
        if self._searched_on_val:
            card["validation"] = "its paper's search of some hyperparameters on the few-shot val images"
        return card

    def trainable_parameters(self) -> int:
        return self.fitted.trainable_params if self.fitted else 0

    def footprint_bytes(self) -> int:
        """The base's weights plus the baseline's (float32)."""
        return super().footprint_bytes() + 4 * (self.fitted.added_params if self.fitted else 0)

    def fields(self) -> dict[str, Any]:
        return {"trainable_params": self.trainable_parameters(),
                "adapter_params": self.fitted.added_params if self.fitted else 0, "adapter_size_mb": None,
                "peft_config": None, "method_args": {},
                "baseline_params": self.fitted.params if self.fitted else {}, "baseline_features": self.features}
