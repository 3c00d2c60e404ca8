"""`--peft_args key=value ...`: any further field of a method's PEFT config, from the command line.

A value is read as JSON where it parses as a value of the field's type (`0.1`, `true`, `[1, 2]`,
`null`), else as the text itself (`init_weights=gaussian`). Each key must be a field of the method's
PEFT config class (or one of its extras, e.g. LoRA+'s `loraplus_lr_ratio`) that the run does not
set itself: the targets come from --encoder/--position/--params, the fields our generic flags set
from --r/--alpha/--dropout_rate, and the fields that make the method what it is (DoRA's
`use_dora`) from --mode. Anything else is a UserError listing the valid keys, raised before a
model loads; so is a value outside the range the method's entry declares for the key where PEFT
takes any value (`Method.ranges`: LoRA+'s ratio > 0, a dropout in [0, 1), ...), and a config PEFT
itself refuses (refusals.py names the flag).

Importing PEFT is slow, so the command line only calls into here when --peft_args is given.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, Union

from qlora_clip.errors import UserError
from qlora_clip.methods.table import BASE_METHODS, Method

# Fields no run takes from --peft_args: where the adapter goes and bookkeeping PEFT fills itself.
PROTECTED = frozenset({
    "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern", "modules_to_save",
    "peft_type", "task_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
    "inference_mode", "total_step", "rank_pattern", "alpha_pattern", "trainable_token_indices",
    "megatron_config", "megatron_core", "layer_replication", "runtime_config", "target_parameters",
})


def config_class(method: Method) -> type:
    import peft

    return getattr(peft, method.peft_class)


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a forward reference PEFT leaves unresolved: check that field by its default only
        return {f.name: Any for f in dataclasses.fields(cls)}


def settable_fields(method: Method) -> dict[str, Any]:
    """key -> the type its value must have, for every key --peft_args accepts for `method`."""
    out: dict[str, Any] = {name: type(value) for name, value in method.extras.items()}
    if method.peft_class is None:
        return out
    cls = config_class(method)
    hints = _hints(cls)
    taken = PROTECTED | set(method.fields.values()) | set(method.fixed)
    if method.scaling_flag:
        taken |= {"use_rslora"}
    for f in dataclasses.fields(cls):
        if f.name not in taken and not f.name.startswith("_"):
            out[f.name] = hints.get(f.name, Any)
    return out


def _other_method(method: Method, key: str, value: Any) -> str | None:
    """The method `key=value` would make of `method` (use_dora=true makes LoRA DoRA), if any."""
    for other in BASE_METHODS:
        if other.peft_class == method.peft_class and other.name != method.name and other.fixed.get(key, ...) == value:
            return other.name
    return None


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a dataclass field's annotation (unknown annotations: PEFT decides)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, list) and (not args or all(_conforms(v, args[0]) for v in value))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_text(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _value(key: str, text: str, hint: Any) -> Any:
    candidates = []
    try:
        candidates.append(json.loads(text))
    except ValueError:
        pass
    candidates += [{"True": True, "False": False, "None": None}.get(text, text)]
    for value in candidates:
        if _conforms(value, hint):
            return value
    raise UserError(f"--peft_args {key}={text}: expected a value of type {_type_text(hint)}")


def parse(method: Method, items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """{key: value} of `--peft_args` items for `method`; UserError for an unknown, repeated or badly typed key."""
    valid = settable_fields(method)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--peft_args {item!r}: write key=value, e.g. --peft_args d_initial=0.1")
        if key not in valid:
            raise UserError(_unknown_key(method, key, valid))
        if key in out:
            raise UserError(f"--peft_args sets {key} twice")
        out[key] = _value(key, text, valid[key])
        allowed = method.ranges.get(key)
        if allowed is not None and out[key] is not None and not allowed.allows(out[key]):
            raise UserError(f"--peft_args {key}={text}: {key} must be {allowed.text()} for --mode {method.name} "
                            f"({allowed.why})")
        other = _other_method(method, key, out[key])
        if other is not None:
            raise UserError(f"--peft_args {key}={text}: that is another method of the table; use --mode {other}")
    return out


def _unknown_key(method: Method, key: str, valid: dict[str, Any]) -> str:
    listed = ", ".join(sorted(valid)) or "none"
    owner = f"{method.peft_class} (--mode {method.name})" if method.peft_class else f"--mode {method.name}"
    if key in method.fields.values():
        flag = next(k for k, v in method.fields.items() if v == key)
        return f"--peft_args {key}: set it with --{flag}, which is {key} for {method.name}"
    if key in method.fixed:
        return f"--peft_args {key}: {method.name} is defined by {key}={method.fixed[key]!r}; choose another --mode"
    return f"--peft_args {key}: not a field of {owner} that can be set; valid keys: {listed}"


def normalised(method: Method, items: list[str] | tuple[str, ...]) -> list[str]:
    """The items as a results line records them: sorted by key, values in JSON (a string as its text
    unless that text would read as another JSON value), so two spellings of one setting are one run."""
    return [f"{key}={_text(value)}" for key, value in sorted(parse(method, items).items())]


def _text(value: Any) -> str:
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value)


def decoded(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """{key: value} of normalised items (as a results line or RunSpec holds them); needs no PEFT."""
    out = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def split(method: Method, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(PEFT config fields, the method's extras with --peft_args applied) of parsed --peft_args."""
    extras = {**method.extras, **{k: v for k, v in values.items() if k in method.extras}}
    return {k: v for k, v in values.items() if k not in method.extras}, extras
