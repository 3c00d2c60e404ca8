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

from qlora_clip.errors import UserError
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.methods.table import method_defaults


def _mentions(detail: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", detail) is not None


def _settings(settings: AdapterConfig) -> list[tuple[str, str, tuple[str, ...], bool]]:
    """Per method setting of the run: how it was given, the flag to change, the names PEFT may call it by, and
    whether it differs from the method's default."""
    method = settings.method
    defaults = method_defaults(method)
    out = [(f"--{flag} {getattr(settings, flag)}", f"--{flag}", (field,), getattr(settings, flag) != defaults[flag])
           for flag, field in method.fields.items()]
    for item in settings.peft_args:
        key = item.partition("=")[0]
        out.append((f"--peft_args {item}", f"--peft_args {key}", (key, key.removeprefix(f"{method.name}_")), True))
    return out


def refusal(settings: AdapterConfig, err: Exception, where: str = "") -> UserError:
    """PEFT's refusal of the method's config (or, `where` saying so, of its layers) as the flag's error: the
    settings its message names, else every setting the run changed."""
    method = settings.method
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    given = _settings(settings)
    named = [s for s in given if any(_mentions(detail, name) for name in s[2])] or [s for s in given if s[3]]
    prefix = f"{', '.join(s[0] for s in named)}: " if named else ""
    change = " or ".join(s[1] for s in named) or "--peft_args or the flags it names"
    return UserError(f"{prefix}--mode {method.name}: PEFT refuses this {method.peft_class or 'method'}{where} "
                     f"({detail}); change {change}")
