"""Deep prompts: learned tokens in the first J layers of a tower, MaPLe's and PromptSRC's mechanism.

Layer 0 gets its prompts through the input: the text context replaces the embeddings of the context
positions (context.py), the vision prompts are appended after the patch (and class) tokens, after the
position embeddings and before CLIP's pre-LayerNorm (MaPLe clip/model.py#L456-L463, PromptSRC
clip/model.py#L404-L413). Each layer i = 1 .. J-1 first replaces the hidden states of those tokens by
its own prompts (MaPLe clip/model.py#L299-L328, PromptSRC #L234-L252); layers J and after run on what
layer J-1 left there. So the prompts enter exactly the first J layers of each tower. The pooled
outputs are unchanged in form: CLIP's class token and end-of-text token attend to the prompts; SigLIP's
attention-pooling head, which would attend to every token, gets the tokens without the appended vision
prompts, so there too they act through attention only.

The hooks stay registered on the frozen base and act only while the method encodes (`text()`,
`vision()`): the model computes as the pretrained base everywhere else (zero-shot, another method's view).
They change no weight, so the same code runs on a 4-bit base.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from qlora_clip.errors import UserError

Prompt = Callable[[int], torch.Tensor]  # layer -> its prompt tokens (n, width)


def _replace(hidden: torch.Tensor, prompt: torch.Tensor, start: int) -> torch.Tensor:
    prompt = prompt.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
    end = start + prompt.shape[1] if start >= 0 else hidden.shape[1]
    start = start if start >= 0 else hidden.shape[1] + start
    return torch.cat([hidden[:, :start], prompt, hidden[:, end:]], dim=1)


def tower_layers(model: nn.Module, tower: str) -> nn.ModuleList:
    """The encoder layers of 'text_model' or 'vision_model' (the four families name them alike)."""
    return getattr(model, tower).encoder.layers


def check_depth(model: nn.Module, depth: int, mode: str) -> None:
    """A prompt depth the towers have layers for."""
    layers = min(len(tower_layers(model, "text_model")), len(tower_layers(model, "vision_model")))
    if not 1 <= depth <= layers:
        raise UserError(f"--mode {mode}: prompt depth {depth} needs 1 to {layers} layers in each tower "
                        "(--peft_args depth=...)")


class DeepPrompts:
    """Hooks that put prompts in the first `depth` layers of both towers while switched on."""

    def __init__(self, model: nn.Module, depth: int, text_start: int, text_prompt: Prompt, vision_prompt: Prompt,
                 vision_tokens: int, strip_before_head: bool):
        self.depth, self.text_start, self.vision_tokens = depth, text_start, vision_tokens
        self.text_prompt, self.vision_prompt = text_prompt, vision_prompt
        self.text_on = self.vision_on = False
        self.handles = []
        for layer in range(1, depth):
            self.handles.append(tower_layers(model, "text_model")[layer].register_forward_pre_hook(
                self._text_hook(layer), with_kwargs=True))
            self.handles.append(tower_layers(model, "vision_model")[layer].register_forward_pre_hook(
                self._vision_hook(layer), with_kwargs=True))
        self.handles.append(model.vision_model.embeddings.register_forward_hook(self._append))
        if strip_before_head:
            self.handles.append(model.vision_model.head.register_forward_pre_hook(self._strip))

    def _text_hook(self, layer: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if not self.text_on:
                return None
            return (_replace(args[0], self.text_prompt(layer), self.text_start), *args[1:]), kwargs
        return hook

    def _vision_hook(self, layer: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if not self.vision_on:
                return None
            return (_replace(args[0], self.vision_prompt(layer), -self.vision_tokens), *args[1:]), kwargs
        return hook

    def _append(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not self.vision_on:
            return None
        prompt = self.vision_prompt(0).to(output.dtype).unsqueeze(0).expand(output.shape[0], -1, -1)
        return torch.cat([output, prompt], dim=1)

    def _strip(self, module: nn.Module, args: tuple) -> tuple | None:
        if not self.vision_on:
            return None
        return (args[0][:, :-self.vision_tokens], *args[1:])

    @contextlib.contextmanager
    def text(self) -> Iterator[None]:
        """While open, text forwards carry the deep text prompts (the layer-0 context is context.py's)."""
        self.text_on = True
        try:
            yield
        finally:
            self.text_on = False

    @contextlib.contextmanager
    def vision(self) -> Iterator[None]:
        """While open, image forwards carry the vision prompts, appended at layer 0 and replaced in layers 1 .. J-1."""
        self.vision_on = True
        try:
            yield
        finally:
            self.vision_on = False
