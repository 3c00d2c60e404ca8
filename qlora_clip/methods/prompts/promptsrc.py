"""PromptSRC (Khattak et al., ICCV 2023): independent deep prompts in both towers, regularised toward the frozen
model, averaged over epochs.

Prompts: the text context (the first n_ctx tokens of "a photo of a") and J-1 deep text prompts, J vision
prompts, all n_ctx tokens per layer, the deep and vision ones N(0, 0.02^2) (PromptSRC
trainers/promptsrc.py#L88-L96, clip/model.py#L210-L252, #L374-L413), in exactly the first J layers of each
tower (deep.py). Trainable: J x n_ctx x (width_t + width_v) (46,080 at ViT-B/16, n_ctx 4, J 9).

Loss (promptsrc.py#L297-L313), with t the prompted normalised class features, f the prompted normalised image
features of the batch, l = logits(f, t):

    CE(l, y) + 25 mean|t - z| + 10 mean|f - g| + sum KL(softmax(s) || softmax(l)) / (B C)

z: the frozen model's class features averaged over 60 of CLIP's ImageNet templates (their raw features
averaged, then normalised; promptsrc.py#L113-L128, #L199-L200: the "textual diversity"), computed once;
g: the frozen model's features of the SAME augmented images; s = logits(g, z). The frozen model is this
base with the prompts switched off (zero_shot_view), not a second model. The KL is summed and divided by
the number of logits, B x C, not by B (#L306-L311), at temperature 1.

Gaussian prompt aggregation (GPA, #L263-L270, #L320-L335): after epoch a (1-based) the prompts are added to
a running sum with weight N(a; mu, sigma) / sum_a' N(a'; mu, sigma); after the last epoch the sum replaces
them, and that is the model evaluated and saved. The code sums the whole state dict (the frozen weights
too, which the weights' sum of 1 leaves unchanged but for rounding); we average the prompts. (mu, sigma)
are data per protocol and dataset (GPA below): base-to-novel 15 / 1 over 20 epochs; few-shot (50 epochs)
30 / 30 or 45 / 5 by dataset group (the few-shot config's comments, ..._few_shot.yaml#L42-L47).
Schedule: Dassl's SGD at 0.0025, batch 4 (configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml).
"""
from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.data.items import class_prompts
from qlora_clip.methods.baselines.templates import IMAGENET_80
from qlora_clip.methods.interface import FitInputs, StepTensors
from qlora_clip.methods.prompts.context import ContextPrompts, class_names, initial_context
from qlora_clip.methods.prompts.deep import DeepPrompts
from qlora_clip.methods.prompts.learner import PromptLearning, method_settings, normal, vision_width
from qlora_clip.methods.prompts.maple import prompt_depth
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.training.result import TrainResult

# PromptSRC's text reference templates (trainers/imagenet_templates.py, IMAGENET_TEMPLATES): "a photo of a {}."
# and the first 59 others of CLIP's 80, i.e. CLIP's first 60 in another order (a mean does not see the order).
TEMPLATES = IMAGENET_80[:60]
# Prompts per text-tower pass while encoding the reference (60 templates x the classes).
TEXT_BATCH = 1024

# GPA's (mean, std) over the epochs, by protocol; few-shot by dataset (promptsrc configs: base-to-novel
# vit_b16_c2_ep20_batch4_4+4ctx.yaml#L42-L43; few-shot vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml#L42-L47, the
# active pair for its first group and every other dataset, the commented pair for the second group).
GPA_BASE2NEW = (15.0, 1.0)
GPA_FEWSHOT = (30.0, 30.0)
GPA_FEWSHOT_SHARP = (45.0, 5.0)
GPA_SHARP_DATASETS = ("stanford_cars", "oxford_flowers", "fgvc", "dtd", "eurosat")


def gpa_setting(protocol: str, dataset: str) -> tuple[float, float]:
    """(mean, std) of the Gaussian over epochs for a run's protocol and dataset."""
    if protocol == "base2new":
        return GPA_BASE2NEW
    return GPA_FEWSHOT_SHARP if dataset in GPA_SHARP_DATASETS else GPA_FEWSHOT


def gpa_weights(epochs: int, mean: float, std: float) -> torch.Tensor:
    """N(a; mean, std) for epoch a = 1 .. epochs, divided by their sum (float64; promptsrc.py#L265-L270, #L358-L360).
    Computed from log-densities, so epochs far in the tails (mean 15 std 1 on a short run) keep their ratios."""
    a = torch.arange(1, epochs + 1, dtype=torch.float64)
    log_density = -0.5 * ((a - mean) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))
    return torch.softmax(log_density, dim=0)


def feature_l1(prompted: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
    """Sum over the elements of |prompted - frozen| (the mean's numerator, F.l1_loss's reduction left to the caller)."""
    return (prompted.float() - frozen.float()).abs().sum()


def logit_kl(logits: torch.Tensor, frozen_logits: torch.Tensor) -> torch.Tensor:
    """Sum over images and classes of KL(softmax(frozen) || softmax(prompted)) at temperature 1 (promptsrc.py#L306-L311,
    before its division by the number of logits)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    log_q = F.log_softmax(frozen_logits.float(), dim=1)
    return (log_q.exp() * (log_q - log_p)).sum()


class IndependentPrompts(nn.Module):
    """The text context and deep text prompts, and the vision prompts, of every prompted layer."""

    def __init__(self, ctx: torch.Tensor, depth: int, vision_tokens: int, vision: int):
        super().__init__()
        n_ctx, width = ctx.shape
        self.ctx = nn.Parameter(ctx)
        self.deep_text = normal((depth - 1, n_ctx, width))
        self.vision_prompts = normal((depth, vision_tokens, vision))

    def text(self, layer: int) -> torch.Tensor:
        return self.ctx if layer == 0 else self.deep_text[layer - 1]

    def vision(self, layer: int) -> torch.Tensor:
        return self.vision_prompts[layer]


class PromptSRC(PromptLearning):
    vision_prompted = True

    def __init__(self, bundle: ClipBundle, settings: AdapterConfig, learner: nn.Module):
        super().__init__(bundle, settings, learner)
        self.depth = learner.vision_prompts.shape[0]
        self.deep = DeepPrompts(bundle.model, self.depth, text_start=0, text_prompt=learner.text,
                                vision_prompt=learner.vision, vision_tokens=learner.vision_prompts.shape[1],
                                strip_before_head=bundle.family.vision_pooling == "attention head")
        self.reference: torch.Tensor | None = None    # z: (classes, dim), normalised
        self.gpa: tuple[float, float] | None = None  # (mean, std) of the run's protocol and dataset, set by fit
        self._sum: dict[str, torch.Tensor] | None = None

    @classmethod
    def build_learner(cls, bundle: ClipBundle, settings: AdapterConfig) -> nn.Module:
        values = method_settings(settings)
        ctx = initial_context(bundle, values["ctx_init"], values["n_ctx"], settings.mode)
        return IndependentPrompts(ctx, prompt_depth(bundle, settings), values["n_ctx_vision"],
                                  vision_width(bundle.model))

    def context_for(self, prompts) -> ContextPrompts:
        context = super().context_for(prompts)
        self.deep.text_start = context.start
        return context

    def deep_text(self) -> AbstractContextManager:
        return self.deep.text()

    def deep_vision(self) -> AbstractContextManager:
        return self.deep.vision()

    # --- the frozen references and the regularisers --------------------------------------------
    def initialize(self, batches: Iterable[torch.Tensor], prompts: ClassPrompts) -> None:
        """z: the frozen model's raw class features averaged over the templates, normalised."""
        names = class_names(prompts)
        texts = [text for template in TEMPLATES for text in class_prompts(template, names)]
        total = None
        with torch.no_grad(), self.zero_shot_view():
            for first in range(0, len(texts), TEXT_BATCH):
                batch = ClassPrompts(self.bundle.tokenizer, texts[first:first + TEXT_BATCH], prompts.device,
                                     text=self.bundle.text)
                raw = self.model.get_text_features(input_ids=batch.input_ids,
                                                   attention_mask=batch.attention_mask).pooler_output.float()
                # Rows are template-major: sum each class's rows over the templates in this pass.
                rows = torch.arange(first, first + len(raw), device=raw.device) % len(names)
                part = torch.zeros(len(names), raw.shape[1], device=raw.device).index_add_(0, rows, raw)
                total = part if total is None else total + part
        self.reference = F.normalize(total / len(TEMPLATES), dim=-1)

    def fit(self, inputs: FitInputs) -> TrainResult:
        self.gpa = gpa_setting(inputs.data.protocol, inputs.data.name)
        with inputs.precision.autocast():
            self.initialize([], inputs.prompts)
        return inputs.train_steps(self)

    def extra_loss(self, step: StepTensors) -> torch.Tensor | None:
        """25 L1(text) + 10 L1(image) + KL / (B C), this micro-batch's share of the step's."""
        if self.reference is None:
            return None
        values = method_settings(self.settings)
        with torch.no_grad(), self.zero_shot_view():
            frozen = F.normalize(self.image_embeddings(step.images).float(), dim=-1)
            frozen_logits = self.family_logits(frozen, self.reference)
        features = F.normalize(step.embeddings.float(), dim=-1)
        text, classes = step.text.float(), step.text.shape[0]
        share = len(step.labels) / step.step_images
        text_term = values["text_loss_weight"] * (text - self.reference).abs().mean() * share
        image_term = values["image_loss_weight"] * feature_l1(features, frozen) / (step.step_images * features.shape[1])
        kl_term = logit_kl(step.logits, frozen_logits) / (step.step_images * classes)
        return text_term + image_term + kl_term

    # --- Gaussian prompt aggregation -------------------------------------------------------------
    def after_epoch(self, epoch: int, epochs: int) -> None:
        """Add this epoch's prompts with their Gaussian weight; after the last, the weighted sum replaces them."""
        weight = float(gpa_weights(epochs, *(self.gpa or GPA_BASE2NEW))[epoch])
        state = {name: p.detach().float() for name, p in self.learner.named_parameters()}
        if self._sum is None or epoch == 0:
            self._sum = {name: torch.zeros_like(value) for name, value in state.items()}
        for name, value in state.items():
            self._sum[name] += weight * value
        if epoch == epochs - 1:
            with torch.no_grad():
                for name, p in self.learner.named_parameters():
                    p.copy_(self._sum[name])
            self._sum = None

    def describe(self) -> dict:
        return {"n_ctx": self.n_ctx, "n_ctx_vision": self.learner.vision_prompts.shape[1], "depth": self.depth,
                "gpa": list(self.gpa) if self.gpa else None, "reference_templates": len(TEMPLATES)}
