"""Normalised text and image features, and the logits the loss and the accuracy use, by backbone family."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from qlora_clip.config import TextSettings
from qlora_clip.families import CLIP_TEXT, family_for_config
from qlora_clip.paper import LOGIT_SCALE

Logits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ClassPrompts:
    """Tokenised class prompts, by the family's text rules (`text`, CLIP's by default).

    CLIP's (and MetaCLIP 2's) prompts are padded to the longest prompt rather than the 77-token
    context: the text tower is causal and pools at the end-of-text token, so padding after that
    token cannot change the features; shorter padding only removes work. SigLIP pools the last
    position, so its prompts are padded to the fixed length it was trained with, and passed without
    a padding mask, as it was trained. `padding` overrides the rule (the benchmark's padding study).
    """

    def __init__(self, tokenizer, prompts: list[str], device: torch.device, padding: str | None = None,
                 text: TextSettings = CLIP_TEXT):
        if text.lowercase:
            prompts = [prompt.lower() for prompt in prompts]
        enc = tokenizer(prompts, padding=padding or text.padding, truncation=True, max_length=text.max_length,
                        return_tensors="pt")
        self.input_ids = enc["input_ids"].to(device)
        self.attention_mask = enc["attention_mask"].to(device) if text.attention_mask else None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def features(self, model: torch.nn.Module) -> torch.Tensor:
        out = model.get_text_features(input_ids=self.input_ids, attention_mask=self.attention_mask)
        return F.normalize(out.pooler_output, dim=-1)


def image_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(model.get_image_features(pixel_values=images).pooler_output, dim=-1)


def logits(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """CLIP-LoRA's logits: scaled cosine similarities (features are normalised), images x classes."""
    return LOGIT_SCALE * image @ text.T


def siglip_logits(model: torch.nn.Module) -> Logits:
    """SigLIP's logits, as SiglipModel computes them: exp(logit_scale) x cosine + logit_bias, with the
    checkpoint's own (frozen) scale and bias, read at each call so they follow the model's device."""
    def compute(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        # PeftModel forwards attribute access to the model it wraps.
        return (image @ text.T) * model.logit_scale.exp() + model.logit_bias
    return compute


def logit_function(model: torch.nn.Module) -> Logits:
    """The logits of the model's family: CLIP-LoRA's fixed 100 x cosine for the CLIP-like families (the
    protocol fixes CLIP's learned temperature at 100), the checkpoint's scale and bias for SigLIP's."""
    if family_for_config(model.config).logits == "siglip":
        return siglip_logits(model)
    return logits


def has_adapters(model: torch.nn.Module, tower: str) -> bool:
    """Whether `tower` ('text_model' or 'vision_model') carries adapter weights (trainable or loaded)."""
    return any("lora_" in name and tower in name for name, _ in model.named_parameters())
