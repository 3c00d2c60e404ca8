"""A method's config or layers refused by PEFT, said as the flag's error: `--r 5: --mode boft: PEFT refuses ...`.

PEFT checks many of its own settings when a config is built (EVA's rho >= 1, AdaLoRA's schedule)
or when the tuner is put on the layers (BOFT's and C3A's block size must divide the layer's
width, FourierFT's n_frequency must fit in it). Its messages name its config fields; the user
gave flags. `refusal` names the run's settings the message mentions: a generic flag by the field
it sets (`--r` for BOFT's boft_block_size), a --peft_args key by its name or by the name without
the method's prefix (EVA's `eva_rho` is EvaConfig's `rho`). Where the message mentions none, it
names every method setting the run changed from the method's defaults.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from qlora_clip.errors import UserError
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.methods.table import method_defaults


def _mentions(detail: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", detail) is not None


class Given(NamedTuple):
    """One method setting of the run."""
    shown: str                # how the run gave it: '--r 5', '--peft_args eva_rho=0'
    flag: str                 # what to change: '--r', '--peft_args eva_rho'
    names: tuple[str, ...]    # what PEFT's messages may call it
    changed: bool             # whether it differs from the method's default


def _given(settings: AdapterConfig) -> list[Given]:
    method = settings.method
    defaults = method_defaults(method)
    out = [Given(f"--{flag} {value}", f"--{flag}", (field,), value != defaults[flag])
           for flag, field in method.fields.items() for value in [getattr(settings, flag)]]
    prefix = f"{method.base_method or method.name}_"  # eva_rho of eva (and of eva-4bit) is EvaConfig's rho
    for item in settings.peft_args:
        key = item.partition("=")[0]
        out.append(Given(f"--peft_args {item}", f"--peft_args {key}", (key, key.removeprefix(prefix)), True))
    return out


def refusal(settings: AdapterConfig, err: Exception, where: str = "") -> UserError:
    """PEFT's refusal of the method's config (or, `where` saying so, of its layers) as the flag's error: the
    settings its message names, else every setting the run changed."""
    method = settings.method
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    given = _given(settings)
    named = [g for g in given if any(_mentions(detail, name) for name in g.names)] or [g for g in given if g.changed]
    prefix = f"{', '.join(g.shown for g in named)}: " if named else ""
    change = " or ".join(g.flag for g in named) or "--peft_args or the flags it names"
    return UserError(f"{prefix}--mode {method.name}: PEFT refuses this {method.peft_class or 'method'}{where} "
                     f"({detail}); change {change}")
