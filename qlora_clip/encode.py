"""CLIP's normalised text and image features, and the logits the loss and the accuracy use."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from qlora_clip.paper import CONTEXT_LENGTH, LOGIT_SCALE
from qlora_clip.text_buckets import TokenBuckets


class ClassPrompts:
    """Tokenised class prompts, padded to the longest prompt rather than CLIP's 77 tokens, and
    encoded in up to `buckets` length buckets (text_buckets.py; 1: one call on all prompts).

    CLIP's text tower is causal and pools at the end-of-text token, so padding after that token
    cannot change the features; shorter padding only removes work. Buckets apply to "longest"
    padding only ("max_length" is the 77-token reference the padding study compares with).
    """

    def __init__(self, tokenizer, prompts: list[str], device: torch.device, padding: str = "longest",
                 buckets: int = 1):
        self.tokenizer, self.prompts, self.device, self.padding = tokenizer, list(prompts), device, padding
        self.max_buckets = buckets
        enc = tokenizer(self.prompts, padding=padding, truncation=True, max_length=CONTEXT_LENGTH,
                        return_tensors="pt")
        self.input_ids = enc["input_ids"].to(device)
        self.attention_mask = enc["attention_mask"].to(device)
        # Token counts, read on the host before the tensors move: planning costs no device sync.
        self.lengths: list[int] = enc["attention_mask"].sum(1).tolist()
        self.buckets = TokenBuckets(self.lengths, device, buckets if padding == "longest" else 1)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def share(self, rows: list[int]) -> ClassPrompts:
        """The prompts of `rows` (repeats allowed), tokenised and bucketed on their own."""
        return ClassPrompts(self.tokenizer, [self.prompts[i] for i in rows], self.device, self.padding,
                            self.max_buckets)

    def features(self, model: torch.nn.Module) -> torch.Tensor:
        """Normalised text features, in label order."""
        if self.buckets.count == 1:
            return _text_features(model, self.input_ids, self.attention_mask)
        parts = [_text_features(model, self.input_ids[rows, :length], self.attention_mask[rows, :length])
                 for rows, length in zip(self.buckets.rows, self.buckets.lengths)]
        return torch.cat(parts)[self.buckets.inverse]


def _text_features(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    out = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
    return F.normalize(out.pooler_output, dim=-1)


def image_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(model.get_image_features(pixel_values=images).pooler_output, dim=-1)


def logits(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Scaled cosine similarities (features are normalised), images x classes."""
    return LOGIT_SCALE * image @ text.T


def has_adapters(model: torch.nn.Module, tower: str) -> bool:
    """Whether `tower` ('text_model' or 'vision_model') carries adapter weights (trainable or loaded)."""
    return any("lora_" in name and tower in name for name, _ in model.named_parameters())
