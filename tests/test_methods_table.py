"""The methods table (qlora_clip/methods.py): every entry complete, and LoRA's defaults and run identities
exactly what they were before the other methods came (old results lines and folders stay valid)."""
from __future__ import annotations

import dataclasses

import peft
import pytest

from qlora_clip.methods.table import BASE_METHODS, METHODS, MODES, NAMED_MODES, method_defaults, resolve_flags
from qlora_clip.run.results import comparable_config
from run_utils import flag_defaults, parse_args, run_spec


@pytest.mark.parametrize("method", BASE_METHODS, ids=lambda m: m.name)
def test_every_entry_is_complete(method):
    assert method.label and method.trains and method.defaults.source and method.defaults.lr > 0
    if method.own:
        assert method.peft_class is None and method.family == "own"
    else:
        fields = {f.name for f in dataclasses.fields(getattr(peft, method.peft_class))}
        assert set(method.fields.values()) | set(method.fixed) | set(method.config_defaults) <= fields
    for flag in method.fields:  # a flag the method has takes a default from the entry
        assert getattr(method.defaults, flag) is not None


def test_the_seeds_four_modes_come_first_and_every_4bit_entry_names_its_base():
    assert MODES[:4] == ("lora", "qlora", "dora", "qdora")
    assert METHODS["qlora"].base_method == "lora" and METHODS["qdora"].dora and METHODS["qdora"].quantized
    for name, method in METHODS.items():
        if method.quantized and method.base_method:
            assert name in (f"{method.base_method}-4bit", "qlora", "qdora")
            assert METHODS[method.base_method].four_bit
    assert set(NAMED_MODES) >= {"lora", "qlora", "dora", "qdora", "loftq", "vera", "bitfit", "full"}


def test_lora_defaults_are_clip_loras_and_what_a_run_records():
    args = parse_args([])
    assert (args.mode, args.quantize, args.r, args.alpha, args.dropout_rate, args.lr, args.lora_scaling,
            args.peft_args) == ("lora", "none", 2, 1.0, 0.25, 0.0002, "rslora", [])
    assert method_defaults(METHODS["vera"])["lr"] == 1e-3 and parse_args(["--mode", "vera"]).alpha is None


def test_a_line_recorded_before_the_method_defaults_is_the_same_run():
    """A results line of the old code has lr 0.0002 etc. and no quantize / peft_args: it is the run a
    new run at the defaults makes, so sweeps skip it and --resume accepts its state."""
    for mode in ("lora", "qlora", "dora", "qdora"):
        new = run_spec(parse_args(["--mode", mode, "--dataset", "dtd", "--shots", "4"]))
        old_config = {k: v for k, v in new.flags.items() if k not in ("quantize", "peft_args")}
        assert comparable_config(old_config, flag_defaults()) == new.identity
        assert new.variant == mode and new.name == f"{mode}-dtd-4shot-seed1"


@pytest.mark.parametrize("mode", ["lora", "qlora", "dora", "qdora"])
def test_changed_settings_keep_the_folders_the_old_code_named(mode):
    """The old code named these folders (digest included) for the same flags."""
    spec = run_spec(parse_args(["--mode", mode, "--shots", "4", "--n_iters", "3", "--batch_size", "8", "--lr", "1e-2"]))
    assert spec.variant == f"{mode}-batch_size8-lr0.01-n_iters3-e63ca0"


def test_a_flag_left_to_the_method_is_not_a_change_of_settings():
    assert run_spec(parse_args(["--mode", "vera"])).variant == "vera"
    assert run_spec(parse_args(["--mode", "vera", "--lr", "1e-3"])).variant == "vera"  # its own default
    assert run_spec(parse_args(["--mode", "vera", "--lr", "2e-4"])).variant.startswith("vera-lr0.0002-")
    assert resolve_flags({"mode": "lora", "quantize": "4bit"})["mode"] == "qlora"
