"""`PromptLearning`: what the prompt learners share as methods of the table (methods/interface.Adapted).

A prompt learner trains tokens that go into the frozen base's towers, never a weight of the base. Its
tokens live in one module (`learner`), registered on the model as `prompt_learner`, so the shared
training loop finds them as the trainable weights (optimizer, gradient sums over processes, the
training state of --checkpoint_every), in float32 also on a 4-bit or half-precision base (the
published code trains them in fp16 without a master copy; docs/methods.md says so). The class prompts
are the context's initial words and the class name (context.py), built for whatever classes are scored
(the run's, base-to-novel's new ones, an --eval_datasets target's), so every protocol works.

While `zero_shot_view` is open the method encodes as the pretrained base with the run's own prompts (its
tokens switched off): the zero-shot row, and the frozen model the regularised learners compare with
(KgCoOp, PromptSRC), without a second model.

Saved form (--save_path): `prompts.safetensors` (the learner's tensors) and `prompts_config.json` (the
method and its settings); `--eval_only` rebuilds the learner on the base and loads them.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, ContextManager, Iterator

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.errors import UserError
from qlora_clip.methods import peft_args
from qlora_clip.methods.interface import Adapted, require_saved
from qlora_clip.methods.prompts.context import (
    ContextPrompts,
    class_names,
    context_inserted,
    context_prompts,
    token_embedding,
)
from qlora_clip.methods.settings import AdapterConfig


WEIGHTS_FILE = "prompts.safetensors"
CONFIG_FILE = "prompts_config.json"


def method_settings(settings: AdapterConfig) -> dict[str, Any]:
    """A prompt learner's settings (its entry's extras: context words, depth, loss weights) with --peft_args
    applied."""
    return peft_args.split(settings.method, settings.peft_values)[1]


def text_width(model: nn.Module) -> int:
    return int(model.config.text_config.hidden_size)


def vision_width(model: nn.Module) -> int:
    return int(model.config.vision_config.hidden_size)


def embedding_width(model: nn.Module) -> int:
    """The pooled image embedding's width: CLIP's projection, SigLIP's head output (its vision width)."""
    return int(getattr(model.config, "projection_dim", None) or vision_width(model))


def normal(shape: tuple[int, ...], std: float = 0.02) -> nn.Parameter:
    """N(0, std^2) prompt tokens, the published random initialisation (from the run's seeded generator)."""
    return nn.Parameter(torch.empty(shape).normal_(0, std))


class PromptLearning(Adapted):
    """A prompt learner on the frozen base (subclasses: CoCoOp, KgCoOp, MaPLe, PromptSRC)."""
    text_prompted = True     # its text features depend on its tokens (the training step re-encodes the prompts)
    vision_prompted = False  # its image embeddings do (the evaluator cannot reuse the base's)

    def __init__(self, bundle: ClipBundle, settings: AdapterConfig, learner: nn.Module):
        super().__init__(bundle, settings)
        self.learner = learner
        self.zero_shot = False
        self._context: dict[tuple[str, ...], ContextPrompts] = {}

    # --- building -------------------------------------------------------------------------------
    @classmethod
    def build_learner(cls, bundle: ClipBundle, settings: AdapterConfig) -> nn.Module:
        """The method's tokens (and any weights of its own), freshly initialised."""
        raise NotImplementedError

    @classmethod
    def attach(cls, bundle: ClipBundle, settings: AdapterConfig) -> PromptLearning:
        """Freeze the base and put the method's tokens beside it, in float32 on the base's device."""
        model = bundle.model
        model.requires_grad_(False)
        learner = cls.build_learner(bundle, settings)
        learner.to(device=token_embedding(model).weight.device, dtype=torch.float32)
        model.add_module("prompt_learner", learner)
        return cls(bundle, settings, learner)

    @classmethod
    def load(cls, bundle: ClipBundle, settings: AdapterConfig, folder: Path) -> PromptLearning:
        """The saved tokens on the base, frozen (--eval_only)."""
        weights = folder / WEIGHTS_FILE
        require_saved(folder, "prompts", WEIGHTS_FILE, CONFIG_FILE)
        adapted = cls.attach(bundle, settings)
        try:
            saved = load_file(weights)
        except (OSError, SafetensorError) as err:
            raise UserError(f"--eval_only: {weights} cannot be read ({err}); save the prompts again") from err
        try:
            adapted.learner.load_state_dict(saved)
        except RuntimeError as err:
            raise UserError(f"--eval_only: {weights} does not hold the tokens these flags build ({err}); pass the "
                            "flags the prompts were trained with") from err
        adapted.learner.requires_grad_(False)
        return adapted

    def settings_values(self) -> dict[str, Any]:
        """The method's settings as this run uses them (its extras with --peft_args applied)."""
        return method_settings(self.settings)

    # --- encoding -------------------------------------------------------------------------------
    def context_for(self, prompts: ClassPrompts) -> ContextPrompts:
        """The method's class prompts for the classes `prompts` stand for (built once per class list)."""
        names = class_names(prompts)
        key = tuple(names)
        if key not in self._context:
            self._context[key] = context_prompts(self.bundle, names, self.settings_values()["ctx_init"],
                                                 self.n_ctx, prompts.device, self.method.name)
        return self._context[key]

    @property
    def n_ctx(self) -> int:
        return self.learner.ctx.shape[0]

    def deep_text(self) -> ContextManager:
        """While open, the text tower's deeper layers carry the method's prompts (MaPLe's, PromptSRC's)."""
        return contextlib.nullcontext()

    def deep_vision(self) -> ContextManager:
        """While open, the vision tower carries the method's prompts (MaPLe's, PromptSRC's)."""
        return contextlib.nullcontext()

    def encode_text(self, context: ContextPrompts) -> torch.Tensor:
        """Normalised features of the context prompts with the learned context (and deep prompts)."""
        with context_inserted(token_embedding(self.model), lambda: self.learner.ctx, context.start), self.deep_text():
            return context.prompts.features(self.model)

    def text_features(self, prompts: ClassPrompts) -> torch.Tensor:
        if self.zero_shot:
            return super().text_features(prompts)
        return self.encode_text(self.context_for(prompts))

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        if self.zero_shot or not self.vision_prompted:
            return super().image_embeddings(images)
        with self.deep_vision():
            return super().image_embeddings(images)

    def zero_shot_view(self) -> ContextManager:
        return self._tokens_off()

    @contextlib.contextmanager
    def _tokens_off(self) -> Iterator[None]:
        previous, self.zero_shot = self.zero_shot, True
        try:
            yield
        finally:
            self.zero_shot = previous

    def tower_is_adapted(self, tower: str) -> bool:
        return self.text_prompted if tower == "text_model" else self.vision_prompted

    # --- the record -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What the tokens are, for the results line's effective config."""
        return {"n_ctx": self.n_ctx}

    def fields(self) -> dict[str, Any]:
        state = self.learner.state_dict()
        return {"trainable_params": self.trainable_parameters(),
                "adapter_params": sum(t.numel() for t in state.values()),
                "adapter_size_mb": sum(t.numel() * t.element_size() for t in state.values()) / 2**20,
                "peft_config": {"peft_type": None, "qlora_clip_prompts": self.method.base_method or self.method.name,
                                **self.describe(), "tensors": {k: list(v.shape) for k, v in state.items()}},
                "method_args": self.settings_values()}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.learner.state_dict().items()},
                  folder / WEIGHTS_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps({"mode": self.method.name, **self.describe(),
                                                      "settings": self.settings_values()}, indent=2))

    @classmethod
    def card_snippet(cls, record: dict, base_model: str, folder: Path) -> str:
        """Python for the model card: the tokens go into the base's towers through this repository's code."""
        peft_args = tuple(record["config"].get("peft_args") or ())
        return ("```python\n# From a checkout of qlora-clip: its code puts the learned tokens into the towers.\n"
                "from pathlib import Path\nfrom types import SimpleNamespace\n\nimport torch\n"
                "from transformers import AutoImageProcessor\n\n"
                "from qlora_clip.backbones.encode import ClassPrompts\n"
                "from qlora_clip.methods.interface import load_adapted\n"
                "from qlora_clip.methods.settings import AdapterConfig\n\n"
                f"settings = AdapterConfig(mode={record['mode']!r}, peft_args={peft_args!r})\n"
                f"adapted = load_adapted({base_model!r}, settings, torch.device(\"cpu\"), torch.float32,\n"
                f"                       saved=Path({str(folder)!r}))  # this folder: {METHOD_FILES}\n"
                f"processor = AutoImageProcessor.from_pretrained({base_model!r})\n"
                f"classnames = [...]  # the {record['dataset']} class names, in label order\n"
                "images = [...]      # PIL images\n"
                "# The method builds its own prompts from the class names.\n"
                "prompts = ClassPrompts(adapted.bundle.tokenizer, classnames, torch.device(\"cpu\"), "
                "text=adapted.bundle.text,\n"
                "                       classes=SimpleNamespace(classnames=classnames))\n"
                "inputs = processor(images=images, return_tensors=\"pt\")\n"
                "with torch.no_grad():\n"
                "    logits = adapted.logits(adapted.image_embeddings(inputs[\"pixel_values\"]), "
                "adapted.text_features(prompts))\n"
                "predicted = logits.argmax(dim=-1)\n```\n")


METHOD_FILES = f"{WEIGHTS_FILE} and {CONFIG_FILE}"


def frozen_text_features(adapted: Adapted, prompts: ClassPrompts) -> torch.Tensor:
    """The pretrained base's normalised features of `prompts` (the method's tokens off), float32, no gradient."""
    with torch.no_grad(), adapted.zero_shot_view():
        return F.normalize(adapted.text_features(prompts).float(), dim=-1)
