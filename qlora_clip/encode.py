"""CLIP's normalised text and image features, and the logits the loss and the accuracy use."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from qlora_clip.errors import UserError
from qlora_clip.paper import CONTEXT_LENGTH, LOGIT_SCALE
from qlora_clip.text_buckets import TokenBuckets

# The files a CLIP tokenizer is built from: the fast tokenizer's one file, or the BPE vocabulary
# and merges. Without them transformers builds a tokenizer that maps every word to one token.
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


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
        check_prompts_distinct(tokenizer, self.prompts, enc["input_ids"], enc["attention_mask"])
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


def check_prompts_distinct(tokenizer, prompts: list[str], input_ids: torch.Tensor,
                           attention_mask: torch.Tensor) -> None:
    """Refuse a tokenization that gives two different prompts the same tokens, or a prompt none at all.

    Special tokens (start, end, padding, unknown) do not count: a checkpoint folder without
    tokenizer files gets a tokenizer that maps every character to the unknown token, so prompts
    differ only in length, their classes get features that say nothing about them, and the run
    ends at chance accuracy with exit 0. The same prompt twice (ImageNet has two classes called
    'crane') is the dataset's doing, not an error.
    """
    special = set(tokenizer.all_special_ids)
    first_with: dict[tuple[int, ...], str] = {}
    for prompt, ids, mask in zip(prompts, input_ids.tolist(), attention_mask.tolist()):
        tokens = [token for token, keep in zip(ids, mask) if keep]
        content = tuple(token for token in tokens if token not in special)
        other = first_with.setdefault(content, prompt)
        if other != prompt or (not content and prompt.strip()):
            raise UserError(_indistinct_message(tokenizer, other, prompt, len(tokens)))


def _indistinct_message(tokenizer, first: str, second: str, length: int) -> str:
    source = getattr(tokenizer, "name_or_path", "") or "the checkpoint"
    what = f"the prompts {first!r} and {second!r} to the same tokens" if first != second else \
        f"the prompt {first!r} to no tokens of its own"
    if os.path.isdir(source):
        present = set(os.listdir(source))
        if not any(all(name in present for name in group) for group in TOKENIZER_FILES):
            return (f"--backbone {source}: the folder has no tokenizer files (tokenizer.json, or vocab.json and "
                    f"merges.txt), so its tokenizer maps {what}; copy the tokenizer files of the checkpoint it "
                    "came from into it")
    if length >= CONTEXT_LENGTH:
        return (f"the prompts {first!r} and {second!r} are the same in their first {CONTEXT_LENGTH} tokens (CLIP's "
                "context), so their classes cannot be told apart; shorten the class names or the --template")
    return (f"--backbone {source}: its tokenizer maps {what}, so the classes cannot be told apart; check the "
            "checkpoint's tokenizer files")


def image_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(model.get_image_features(pixel_values=images).pooler_output, dim=-1)


def logits(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Scaled cosine similarities (features are normalised), images x classes."""
    return LOGIT_SCALE * image @ text.T

