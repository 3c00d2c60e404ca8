"""MaPLe (Khattak et al., CVPR 2023): deep prompts in both towers, the vision ones coupled to the text ones.

    text prompts   P_0 = ctx (the first n_ctx tokens of "a photo of a"), P_j ~ N(0, 0.02^2) for j = 1 .. J-1
    vision prompts V_j = F_j(P_j), F_j: Linear(text width -> vision width), one per depth

P_0 and V_0 enter through the towers' inputs, P_j and V_j replace the prompt tokens before layer j
(deep.py): exactly the first J layers of each tower carry prompts, and every vision prompt is the
coupling of the text prompt of its depth, so the gradients of both towers reach the text prompts
(multimodal-prompt-learning trainers/maple.py#L69-L136 the parameters, #L171-L176 the coupling,
clip/model.py#L299-L331, #L445-L476 the deep insertion). The J-1 deep couplings start as copies of
one initialised layer (maple.py#L116-L117, #L207-L208). With n_ctx 2 the class prompts read
"[ctx][ctx] of a {name}." (the words after the context stay, maple.py#L119-L131).

Trainable: J x (n_ctx x width_t + width_t x width_v + width_v) (3,555,072 at ViT-B/16, n_ctx 2, J 9).
Schedule: Dassl's SGD at 0.0035, batch 4, 5 epochs
(configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml#L3-L36).
"""
from __future__ import annotations

import copy
import logging
from contextlib import AbstractContextManager

import torch
from torch import nn

from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.methods.prompts.context import ContextPrompts, initial_context
from qlora_clip.methods.prompts.deep import DeepPrompts, check_depth, tower_layers
from qlora_clip.methods.prompts.learner import PromptLearning, method_settings, normal, vision_width
from qlora_clip.methods.settings import AdapterConfig

log = logging.getLogger(__name__)


def prompt_depth(bundle: ClipBundle, settings: AdapterConfig) -> int:
    """The entry's depth (J), or every layer of a tower shallower than that when --peft_args does not set it (the
    tiny checkpoints have 6); a depth --peft_args asks for must fit."""
    depth = method_settings(settings)["depth"]
    layers = min(len(tower_layers(bundle.model, "text_model")), len(tower_layers(bundle.model, "vision_model")))
    if "depth" not in settings.peft_values and depth > layers:
        log.info("--mode %s: prompt depth %d on towers of %d layers: prompts in all %d", settings.mode, depth, layers,
                 layers)
        depth = layers
    check_depth(bundle.model, depth, settings.mode)
    return depth


class CoupledPrompts(nn.Module):
    """The shallow context, J-1 deep text prompts, and the J couplings to the vision tower."""

    def __init__(self, ctx: torch.Tensor, depth: int, vision: int):
        super().__init__()
        n_ctx, width = ctx.shape
        self.ctx = nn.Parameter(ctx)
        self.proj = nn.Linear(width, vision)
        self.deep_text = normal((depth - 1, n_ctx, width))
        deep = nn.Linear(width, vision)
        self.deep_proj = nn.ModuleList(copy.deepcopy(deep) for _ in range(depth - 1))

    def text(self, layer: int) -> torch.Tensor:
        return self.ctx if layer == 0 else self.deep_text[layer - 1]

    def vision(self, layer: int) -> torch.Tensor:
        """V_j = F_j(P_j): the coupling of the text prompt of the same depth."""
        coupling = self.proj if layer == 0 else self.deep_proj[layer - 1]
        return coupling(self.text(layer))


class MaPLe(PromptLearning):
    vision_prompted = True

    def __init__(self, bundle: ClipBundle, settings: AdapterConfig, learner: nn.Module):
        super().__init__(bundle, settings, learner)
        self.depth = learner.deep_text.shape[0] + 1
        self.deep = DeepPrompts(bundle.model, self.depth, text_start=0, text_prompt=learner.text,
                                vision_prompt=learner.vision, vision_tokens=learner.ctx.shape[0],
                                strip_before_head=bundle.family.vision_pooling == "attention head")

    @classmethod
    def build_learner(cls, bundle: ClipBundle, settings: AdapterConfig) -> nn.Module:
        values = method_settings(settings)
        ctx = initial_context(bundle, values["ctx_init"], values["n_ctx"], settings.mode)
        return CoupledPrompts(ctx, prompt_depth(bundle, settings), vision_width(bundle.model))

    def context_for(self, prompts) -> ContextPrompts:
        context = super().context_for(prompts)
        self.deep.text_start = context.start  # where this tokenizer puts the context (after a start token or not)
        return context

    def deep_text(self) -> AbstractContextManager:
        return self.deep.text()

    def deep_vision(self) -> AbstractContextManager:
        return self.deep.vision()

    def describe(self) -> dict:
        return {"n_ctx": self.n_ctx, "depth": self.depth, "coupling": "linear text -> vision per depth"}
