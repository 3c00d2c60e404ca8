"""The adapter methods, in one table: what each `--mode` quantizes, whether it is DoRA, its name in tables.

LoRA, QLoRA, DoRA and QDoRA are one code path (model.py); a method is only these two switches.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str        # the --mode value, and the method's name in results lines
    label: str       # how papers write it
    quantized: bool  # the frozen base is stored in 4-bit NF4 (bitsandbytes)
    dora: bool       # weight-decomposed adapters (PEFT's use_dora)


METHODS = {m.name: m for m in (
    Method("lora", "LoRA", quantized=False, dora=False),
    Method("qlora", "QLoRA", quantized=True, dora=False),
    Method("dora", "DoRA", quantized=False, dora=True),
    Method("qdora", "QDoRA", quantized=True, dora=True),
)}
MODES = tuple(METHODS)


def zero_shot_label(quantized: bool, details: list[str] = ()) -> str:
    """Zero-shot CLIP, on the base a method evaluates (the 4-bit base is a different model)."""
    details = (["4-bit base"] if quantized else []) + list(details)
    return f"zero-shot ({', '.join(details)})" if details else "zero-shot"
