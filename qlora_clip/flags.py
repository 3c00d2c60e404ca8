"""A setting of main.py declared once: a dataclass field that carries its flag's default, type, help and role.

Every flag of main.py is a field of one of the typed settings (DataConfig, ModelConfig, AdapterConfig,
TrainConfig, EvalConfig, OutputConfig, TrackingConfig; RunSpec gathers them). The field's name is the
flag's name (`--shots` is `DataConfig.shots`), so run names, folders and digests spell the same words
as the command line. `add_flags` builds the command line from the fields, `defaults` reads every
default from them, and `build` makes a setting from flag values: nothing is written twice.

Why a small builder rather than transformers' HfArgumentParser: ours keeps argparse's own forms that
users and the sweep rely on (`--eval_only` is a switch, not `--eval_only [true|false]`; a flag whose
default is "the method's" stays None until the method fills it in), groups the flags by what they
set in --help, and records each flag's role (below), which a run's identity is derived from.

A flag's role says what it is part of:
    ADAPTER      what the run trains: part of the run's identity and of the trained adapter's
    RUN          what the run computes or measures but not the adapter it trains (other datasets'
                 test sets, --eval_only, gradient checkpointing): part of the run's identity only
    BOOKKEEPING  where things are read and written, how work is spread: never part of an identity,
                 so moving the data or the results file does not make finished runs look unfinished
A flag added after runs were recorded can be declared `keyed_at_default=False`: at its default it stays out of
the identity, so those runs (and every new run that leaves it alone) keep their identity, key and folders.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

ADAPTER, RUN, BOOKKEEPING = "adapter", "run", "bookkeeping"
ROLES = (ADAPTER, RUN, BOOKKEEPING)
# --help's sections, in this order; a flag names the one it is listed in.
GROUPS = ("data", "protocol", "model", "training", "outputs", "experiment tracking")
_KEY = "qlora_clip_flag"


@dataclass(frozen=True)
class Flag:
    """What the command line needs of a setting beyond its field's name and default."""
    help: str
    group: str
    role: str = ADAPTER
    type: Callable[[str], Any] | None = None  # None: the default's type (str when the default is None)
    choices: tuple | None = None
    nargs: str | None = None                   # '+': a list on the command line, a tuple in the setting
    metavar: str | None = None
    convert: Callable[[Any], Any] | None = None  # applied to a given value when the setting is built (Path)
    keyed_at_default: bool = True  # False: part of the identity only when set to something else than the default


def flag(default: Any = dataclasses.MISSING, help: str = "", *, group: str, role: str = ADAPTER,
         default_factory: Callable[[], Any] | None = None, type: Callable[[str], Any] | None = None,
         choices: Iterable | None = None, nargs: str | None = None, metavar: str | None = None,
         convert: Callable[[Any], Any] | None = None, keyed_at_default: bool = True) -> Any:
    """A dataclass field that is also a flag of main.py (`--<field name>`)."""
    if group not in GROUPS or role not in ROLES:
        raise ValueError(f"flag group {group!r} / role {role!r}: choose from {GROUPS} / {ROLES}")
    spec = Flag(help=help, group=group, role=role, type=type, choices=tuple(choices) if choices is not None else None,
                nargs=nargs, metavar=metavar, convert=convert, keyed_at_default=keyed_at_default)
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={_KEY: spec})
    return dataclasses.field(default=default, metadata={_KEY: spec})


def flag_of(field: dataclasses.Field) -> Flag | None:
    return field.metadata.get(_KEY)


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a settings class that are flags (others are filled in by RunSpec)."""
    return [f for f in dataclasses.fields(cls) if flag_of(f) is not None]


def default_of(field: dataclasses.Field) -> Any:
    """The flag's default as the command line gives it (a list for a flag that takes several values)."""
    value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    return list(value) if flag_of(field).nargs and value is not None else value


def defaults(classes: Iterable[type]) -> dict[str, Any]:
    """Every flag's default, by name."""
    return {f.name: default_of(f) for cls in classes for f in flag_fields(cls)}


def roles(classes: Iterable[type]) -> dict[str, str]:
    """Every flag's role, by name."""
    return {f.name: flag_of(f).role for cls in classes for f in flag_fields(cls)}


def unkeyed_defaults(classes: Iterable[type]) -> dict[str, Any]:
    """The defaults of the flags declared `keyed_at_default=False`, by name: at these values they are no part of an
    identity."""
    return {f.name: default_of(f) for cls in classes for f in flag_fields(cls) if not flag_of(f).keyed_at_default}


def add_flags(parser: argparse.ArgumentParser, classes: Iterable[type]) -> None:
    """Add every flag of `classes` to `parser`, in --help sections by group, in field order."""
    sections = {name: parser.add_argument_group(name) for name in GROUPS}
    for cls in classes:
        for field in flag_fields(cls):
            spec = flag_of(field)
            default = default_of(field)
            kwargs: dict[str, Any] = {"default": default, "help": spec.help}
            if isinstance(default, bool):
                kwargs["action"] = "store_true"
            else:
                kwargs.update({k: v for k, v in (("type", spec.type or _type_of(default)), ("choices", spec.choices),
                                                 ("nargs", spec.nargs), ("metavar", spec.metavar)) if v is not None})
            sections[spec.group].add_argument(f"--{field.name}", **kwargs)


def _type_of(default: Any) -> Callable[[str], Any] | None:
    if isinstance(default, (list, tuple)):
        return type(default[0]) if default else str
    return type(default) if isinstance(default, (int, float)) else None


def build(cls: type, flags: Mapping[str, Any], **others: Any) -> Any:
    """An instance of `cls` from flag values (lists become tuples, `convert` applied), its other fields from
    `others`."""
    values = {}
    for field in flag_fields(cls):
        value, spec = flags[field.name], flag_of(field)
        if spec.nargs and value is not None:
            value = tuple(value)
        if spec.convert is not None and value is not None:
            value = spec.convert(value)
        values[field.name] = value
    return cls(**values, **others)
