"""Class prompts as the text tower takes them, and normalised text and image features (the logits are the family's:
families.LogitRule)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import os
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from qlora_clip.errors import UserError
from qlora_clip.backbones.families import CLIP_TEXT, TextSettings
from qlora_clip.paper import CONTEXT_LENGTH
from qlora_clip.backbones.text_buckets import TokenBuckets

if TYPE_CHECKING:
    from qlora_clip.data.items import PromptedClasses

# The files a tokenizer of the families is built from: the fast tokenizer's one file, CLIP's BPE
# vocabulary and merges, or a SentencePiece model. Without them transformers builds a tokenizer
# that maps every word to one token.
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("spiece.model",), ("sentencepiece.bpe.model",),
                   ("tokenizer.model",))


class ClassPrompts:
    """Tokenised class prompts, by the family's text rules (`text`, CLIP's by default), encoded in up
    to `buckets` length buckets (text_buckets.py; 1: one call on all prompts).

    CLIP's (and MetaCLIP 2's) prompts are padded to the longest prompt rather than the 77-token
    context: the text tower is causal and pools at the end-of-text token, so padding after that
    token cannot change the features; shorter padding only removes work, and so do buckets.
    SigLIP pools the last position, so its prompts are padded to the fixed length it was trained
    with, passed without a padding mask, as it was trained, and never bucketed. `padding`
    overrides the rule (the benchmark's padding study; "max_length" is never bucketed either).
    """

    def __init__(self, tokenizer, prompts: list[str], device: torch.device, padding: str | None = None,
                 text: TextSettings = CLIP_TEXT, buckets: int = 1, classes: PromptedClasses | None = None):
        if text.lowercase:
            prompts = [prompt.lower() for prompt in prompts]
        self.tokenizer, self.prompts, self.device, self.text = tokenizer, list(prompts), device, text
        # The classes the prompts name (their dataset and names): a method that builds its own class text
        # (CoOp's learned context, a prompt ensemble) reads them; None where prompts stand alone.
        self.classes = classes
        self.padding = padding or text.padding
        self.max_buckets = buckets
        enc = tokenizer(self.prompts, padding=self.padding, truncation=True, max_length=text.max_length,
                        return_tensors="pt")
        # SigLIP's tokenizer returns no mask (its model takes none): every position counts.
        mask = enc["attention_mask"] if "attention_mask" in enc else torch.ones_like(enc["input_ids"])
        check_prompts_distinct(tokenizer, self.prompts, enc["input_ids"], mask, text.max_length)
        self.input_ids = enc["input_ids"].to(device)
        self.attention_mask = mask.to(device) if text.attention_mask else None
        # Token counts, read on the host before the tensors move: planning costs no device sync.
        self.lengths: list[int] = mask.sum(1).tolist()
        bucketable = self.padding == "longest" and text.pooled_at_end_of_text and text.attention_mask
        self.buckets = TokenBuckets(self.lengths, device, buckets if bucketable else 1)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def share(self, rows: list[int]) -> ClassPrompts:
        """The prompts of `rows` (repeats allowed), tokenised and bucketed on their own, naming the classes of those
        rows (a method that builds its own class text, a prompt learner, encodes its share of the classes)."""
        classes = SimpleNamespace(classnames=[self.classes.classnames[i] for i in rows]) if self.classes else None
        return ClassPrompts(self.tokenizer, [self.prompts[i] for i in rows], self.device, self.padding, self.text,
                            self.max_buckets, classes=classes)

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
                           attention_mask: torch.Tensor, context: int = CONTEXT_LENGTH) -> None:
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
            raise UserError(_indistinct_message(tokenizer, other, prompt, len(tokens), context))


def _indistinct_message(tokenizer, first: str, second: str, length: int, context: int) -> str:
    source = getattr(tokenizer, "name_or_path", "") or "the checkpoint"
    what = f"the prompts {first!r} and {second!r} to the same tokens" if first != second else \
        f"the prompt {first!r} to no tokens of its own"
    if os.path.isdir(source):
        present = set(os.listdir(source))
        if not any(all(name in present for name in group) for group in TOKENIZER_FILES):
            return (f"--backbone {source}: the folder has no tokenizer files (tokenizer.json, or vocab.json and "
                    f"merges.txt), so its tokenizer maps {what}; copy the tokenizer files of the checkpoint it "
                    "came from into it")
    if length >= context:
        return (f"the prompts {first!r} and {second!r} are the same in their first {context} tokens (the model's "
                "context), so their classes cannot be told apart; shorten the class names or the --template")
    return (f"--backbone {source}: its tokenizer maps {what}, so the classes cannot be told apart; check the "
            "checkpoint's tokenizer files")


def image_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(model.get_image_features(pixel_values=images).pooler_output, dim=-1)
