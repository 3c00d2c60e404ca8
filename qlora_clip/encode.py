"""CLIP's normalised text and image features, and the logits the loss and the accuracy use."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from qlora_clip.paper import CONTEXT_LENGTH, LOGIT_SCALE


class ClassPrompts:
    """Tokenised class prompts, padded to the longest prompt rather than CLIP's 77 tokens.

    CLIP's text tower is causal and pools at the end-of-text token, so padding after that token
    cannot change the features; shorter padding only removes work.
    """

    def __init__(self, tokenizer, prompts: list[str], device: torch.device, padding: str = "longest"):
        enc = tokenizer(prompts, padding=padding, truncation=True, max_length=CONTEXT_LENGTH, return_tensors="pt")
        self.input_ids = enc["input_ids"].to(device)
        self.attention_mask = enc["attention_mask"].to(device)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def features(self, model: torch.nn.Module) -> torch.Tensor:
        out = model.get_text_features(input_ids=self.input_ids, attention_mask=self.attention_mask)
        return F.normalize(out.pooler_output, dim=-1)


def image_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(model.get_image_features(pixel_values=images).pooler_output, dim=-1)


def logits(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Scaled cosine similarities (features are normalised), images x classes."""
    return LOGIT_SCALE * image @ text.T

