"""Learned context in the text tower's input: the class prompts it goes into, where it goes, and the hook that
puts it there. Shared by the prompt learners trained through the loop (this package) and CoOp's baseline
(methods/baselines/coop.py, whose CLIP-only prompt ids are its own).

The prompt learners built on CoOp's code write each class's prompt as the context's initial words followed
by the class name, "a photo of a {name}.", and replace the token embeddings of the first n_ctx of those
words by the learned context (CoCoOp trainers/cocoop.py#L75-L83, #L104-L116; KgCoOp
trainers/kgcoop.py#L94-L104; MaPLe trainers/maple.py#L84-L92, #L119-L131; PromptSRC
trainers/promptsrc.py#L88-L96). Here the prompts are tokenised by the family's own rules (the run's
ClassPrompts: padding, context length, lowercasing, padding mask), and the context's position is where
the initial words start: right after the start token (CLIP, MetaCLIP 2) or at position 0 where the
tokenizer adds none (SigLIP). The positions of the class name and of the end-of-text token, where CLIP
pools, do not move; SigLIP pools its fixed last position, which a context at the start does not move either.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.errors import UserError

Context = Callable[[], torch.Tensor]  # -> (n_ctx, width), or (rows, n_ctx, width): one context per prompt row


@contextlib.contextmanager
def context_inserted(token_embedding: nn.Embedding, context: Context, start: int) -> Iterator[None]:
    """While open, the token embedding's output carries `context()` at positions start .. start + n_ctx of every
    row (the same context for all rows, or one per row)."""
    def insert(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        ctx = context().to(output.dtype)
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(output.shape[0], -1, -1)
        return torch.cat([output[:, :start], ctx, output[:, start + ctx.shape[1]:]], dim=1)

    handle = token_embedding.register_forward_hook(insert)
    try:
        yield
    finally:
        handle.remove()


def token_embedding(model: nn.Module) -> nn.Embedding:
    """The text tower's token embedding (the four families name it alike)."""
    return model.text_model.embeddings.token_embedding


def class_names(prompts: ClassPrompts) -> list[str]:
    """The class names `prompts` stand for (their dataset's); prompts that name no classes (the benchmark's
    synthetic ones) stand for themselves."""
    return list(prompts.classes.classnames) if prompts.classes is not None else list(prompts.prompts)


@dataclass
class ContextPrompts:
    """Each class's prompt "<init words> <name>." tokenised by the family's rules, and where the context goes."""
    prompts: ClassPrompts
    start: int      # position of the first context token
    n_ctx: int


def _start_of(ids: list[int], words: list[int]) -> int | None:
    for start in range(len(ids) - len(words) + 1):
        if ids[start:start + len(words)] == words:
            return start
    return None


def init_tokens(bundle: ClipBundle, init: str) -> list[int]:
    """The token ids of the context's initial words, as the family tokenises them (lowercased for SigLIP 2)."""
    text = init.lower() if bundle.text.lowercase else init
    return bundle.tokenizer(text, add_special_tokens=False)["input_ids"]


def context_prompts(bundle: ClipBundle, classnames: list[str], init: str, n_ctx: int, device: torch.device,
                    mode: str) -> ContextPrompts:
    """The class prompts a context of `n_ctx` tokens (the first of `init`'s) goes into."""
    texts = [f"{init} {name.replace('_', ' ')}." for name in classnames]
    prompts = ClassPrompts(bundle.tokenizer, texts, device, text=bundle.text)
    words = init_tokens(bundle, init)[:n_ctx]
    starts = {_start_of(row[:len(words) + 2], words) for row in prompts.input_ids.tolist()}
    if len(starts) != 1 or None in starts:
        raise UserError(f"--mode {mode}: the {bundle.family.label} tokenizer does not keep the context's words "
                        f"{init!r} at the start of every class prompt; the context has no fixed place to go")
    return ContextPrompts(prompts, starts.pop(), n_ctx)


def initial_context(bundle: ClipBundle, init: str, n_ctx: int | None, mode: str) -> torch.Tensor:
    """The token embeddings of the first n_ctx tokens of `init` (None: all of them), float32 (n_ctx, width):
    the context's published initialisation from words."""
    words = init_tokens(bundle, init)
    n_ctx = len(words) if n_ctx is None else n_ctx
    if not 1 <= n_ctx <= len(words):
        raise UserError(f"--mode {mode}: a context of {n_ctx} tokens initialised from {init!r} needs 1 to "
                        f"{len(words)} tokens (the words' count for the {bundle.family.label} tokenizer)")
    embedding = token_embedding(bundle.model)
    with torch.no_grad():
        ids = torch.tensor(words[:n_ctx], device=embedding.weight.device)
        return embedding(ids).detach().float().clone()
