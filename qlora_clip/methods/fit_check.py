"""Whether the method fits the checkpoint's layers, checked before any data pass or weights load.

Once --backbone's config.json is read (RunSpec.checkpoint), the model's skeleton is built on the
meta device: every layer with its shapes, no weights, no memory, in well under a second. Two
checks run on it:

1. The method's rank bound (`Method.rank_bound`, data on its table entry) against the width of
   every layer it adapts, where the method's math makes a larger --r meaningless: a LoRA of rank
   100,000 on 64-wide layers still allocates its 100,000 x 64 factors (and ran past 4.6 GB), HRA's
   1,000 reflections of a 64-dimensional space ran for 8 minutes. Refused, naming the layer width.
2. The method attached to the skeleton with a plain initialisation (`Adapted.attach_plain`): PEFT
   checks its config against each layer there (BOFT's and C3A's block sizes must divide the width,
   FourierFT's n_frequency and SHiRA's rank must fit in it), and a refusal becomes the flag's error
   (refusals.py) instead of a ValueError after the weights loaded.

An initialisation that needs values (SHiRA's random mask uses torch.nonzero) cannot run on the
meta device; PEFT's checks come before it, so such a method is checked up to there.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch

from qlora_clip.backbones.loading import Checkpoint, ClipBundle, load_tokenizer
from qlora_clip.errors import UserError
from qlora_clip.methods.interface import runtime_class
from qlora_clip.methods.refusals import refusal
from qlora_clip.methods.settings import AdapterConfig

log = logging.getLogger(__name__)

Layer = tuple[str, int, int]  # module name, in_features, out_features


def _at_most(r: int, layers: list[Layer], width: Callable[[Layer], int], rule: str) -> tuple[str, str] | None:
    """(what r must be, the layer that bounds it) when r exceeds `width` of the narrowest layer, else None."""
    narrowest = min(layers, key=width)
    name, i, o = narrowest
    if r <= width(narrowest):
        return None
    return (f"r <= {rule} of every layer it adapts: {width(narrowest)} for {name} ({i} in, {o} out)",
            f"--r {width(narrowest)} or less")


def _dividing(r: int, layers: list[Layer]) -> tuple[str, str] | None:
    """(what r must be, the choices) when r does not divide the input width of every layer, else None."""
    common = math.gcd(*(i for _, i, _ in layers))
    if common % r == 0:
        return None
    name, i, _ = next(layer for layer in layers if layer[1] % r)
    divisors = [d for d in range(1, common + 1) if common % d == 0]
    return (f"r to divide the input width of every layer it adapts: {i} for {name}",
            f"a divisor of {common}: {', '.join(map(str, divisors))}")


RULES: dict[str, Callable[[int, list[Layer]], tuple[str, str] | None]] = {
    "min(in, out)": lambda r, layers: _at_most(r, layers, lambda layer: min(layer[1], layer[2]), "min(in, out)"),
    "in": lambda r, layers: _at_most(r, layers, lambda layer: layer[1], "the input width"),
    "divides in": _dividing,
}


def skeleton(checkpoint: Checkpoint) -> torch.nn.Module:
    """The checkpoint's model on the meta device: its layers' shapes from config.json, no weights."""
    model_class = checkpoint.family.model_class_object()
    config = model_class.config_class.from_pretrained(checkpoint.source)
    with torch.device("meta"):
        return model_class(config)


def targeted_layers(model: torch.nn.Module, names: list[str]) -> list[Layer]:
    """The linear layers among `names` with their widths."""
    layers = []
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, torch.nn.Linear):
            layers.append((name, module.in_features, module.out_features))
    return layers


def rank_error(settings: AdapterConfig, layers: list[Layer], backbone: str) -> str | None:
    """Why --r is meaningless for these layers under the method's rank bound, or None."""
    bound = settings.method.rank_bound
    if bound is None or settings.r is None or not layers:
        return None
    found = RULES[bound.rule](settings.r, layers)
    if found is None:
        return None
    needs, choice = found
    return (f"--r {settings.r}: --mode {settings.mode} needs {needs} of --backbone {backbone} ({bound.why}); "
            f"choose {choice}")


def check_fit(settings: AdapterConfig, checkpoint: Checkpoint) -> None:
    """UserError naming the flag when the method's rank or config does not fit the checkpoint's layers."""
    model = skeleton(checkpoint)
    names = settings.targets(checkpoint.family, model.config)
    message = rank_error(settings, targeted_layers(model, names), checkpoint.backbone)
    if message:
        raise UserError(message)
    # The tokenizer (files beside config.json, read in a fraction of a second) for the methods whose tokens start
    # from words (the prompt learners' context); the weights and the image settings stay unread.
    tokenizer = load_tokenizer(checkpoint.family, checkpoint.source, checkpoint.backbone)
    bundle = ClipBundle(model=model, tokenizer=tokenizer, image=None, text=checkpoint.family.text_settings(model.config),
                        family=checkpoint.family, checkpoint=checkpoint)
    try:
        runtime_class(settings.method).attach_plain(bundle, settings)
    except NotImplementedError as err:  # an operation the meta device has no kernel for: PEFT's checks ran before it
        log.debug("the method's initialisation cannot run on the meta device (%s); checked up to there", err)
    except (ValueError, AssertionError, RuntimeError, ArithmeticError) as err:
        raise refusal(settings, err, f" on the layers of --backbone {checkpoint.backbone}") from err
