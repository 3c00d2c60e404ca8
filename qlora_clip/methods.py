"""The methods, in one table: what each `--mode` quantizes, whether it is DoRA, its name in tables.

LoRA, QLoRA, DoRA and QDoRA are one code path (model.py); a method is only these two switches.
The baselines of the field's tables (kind "baseline") are qlora_clip/baselines/'s: each runs on the
frozen base, never through the PEFT path, with its paper's hyperparameters (`defaults`, from
qlora_clip/baselines/hparams.py, which cites each value).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from qlora_clip.baselines import hparams


@dataclass(frozen=True)
class Method:
    name: str        # the --mode value, and the method's name in results lines
    label: str       # how papers write it
    quantized: bool  # the frozen base is stored in 4-bit NF4 (bitsandbytes)
    dora: bool       # weight-decomposed adapters (PEFT's use_dora)
    kind: str = "peft"  # "peft": an adapter trained by trainer.py; "baseline": qlora_clip/baselines/
    defaults: Mapping = field(default_factory=dict)  # a baseline's published hyperparameters, with "source"


def _baseline(name: str, label: str, defaults: Mapping) -> Method:
    return Method(name, label, quantized=False, dora=False, kind="baseline", defaults=defaults)


METHODS = {m.name: m for m in (
    Method("lora", "LoRA", quantized=False, dora=False),
    Method("qlora", "QLoRA", quantized=True, dora=False),
    Method("dora", "DoRA", quantized=False, dora=True),
    Method("qdora", "QDoRA", quantized=True, dora=True),
    _baseline("zs_ensemble_imagenet", "Zero-shot CLIP, 80 ImageNet prompts", hparams.ZERO_SHOT_ENSEMBLE),
    _baseline("zs_ensemble_dataset", "Zero-shot CLIP, per-dataset prompts", hparams.ZERO_SHOT_ENSEMBLE),
    _baseline("linear_probe", "Linear probe", hparams.LINEAR_PROBE),
    _baseline("lp_plus_plus", "LP++", hparams.LP_PLUS_PLUS),
    _baseline("tip_adapter", "Tip-Adapter", hparams.TIP_ADAPTER),
    _baseline("tip_adapter_f", "Tip-Adapter-F", hparams.TIP_ADAPTER),
    _baseline("clip_adapter", "CLIP-Adapter", hparams.CLIP_ADAPTER),
    _baseline("coop", "CoOp", hparams.COOP),
)}
MODES = tuple(METHODS)
BASELINE_MODES = tuple(name for name, method in METHODS.items() if method.kind == "baseline")


def zero_shot_label(quantized: bool, details: list[str] = ()) -> str:
    """Zero-shot CLIP, on the base a method evaluates (the 4-bit base is a different model)."""
    details = (["4-bit base"] if quantized else []) + list(details)
    return f"zero-shot ({', '.join(details)})" if details else "zero-shot"
