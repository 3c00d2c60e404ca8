"""qlora_clip/methods.py: the table of adapter methods, and how zero-shot rows are labelled."""
from __future__ import annotations

import dataclasses
import itertools

import pytest

from qlora_clip.config import AdapterConfig
from qlora_clip.methods import METHODS, MODES, Method, zero_shot_label
from qlora_clip.model import lora_config
from run_utils import build_parser


def test_the_table_is_the_four_methods_each_named_once():
    assert MODES == ("lora", "qlora", "dora", "qdora")
    assert all(name == method.name for name, method in METHODS.items())  # the key is the --mode value
    assert [m.label for m in METHODS.values()] == ["LoRA", "QLoRA", "DoRA", "QDoRA"]
    mode_flag = next(a for a in build_parser()._actions if a.dest == "mode")
    assert tuple(mode_flag.choices) == MODES


def test_qlora_and_qdora_quantize_the_base_and_dora_and_qdora_are_dora():
    assert {m.name for m in METHODS.values() if m.quantized} == {"qlora", "qdora"}
    assert {m.name for m in METHODS.values() if m.dora} == {"dora", "qdora"}
    # One method for each combination of the two switches, so none shadows another.
    assert sorted((m.quantized, m.dora) for m in METHODS.values()) == sorted(itertools.product((False, True), repeat=2))
    for method in METHODS.values():  # a quantized method's label is its full-precision twin's with a Q
        if method.quantized:
            twin = next(m for m in METHODS.values() if not m.quantized and m.dora == method.dora)
            assert method.label == "Q" + twin.label


@pytest.mark.parametrize("mode", MODES)
def test_the_adapter_config_takes_dora_from_the_table(mode):
    assert lora_config(AdapterConfig(mode), ["q_proj"]).use_dora is METHODS[mode].dora


def test_methods_cannot_be_changed_in_place():
    with pytest.raises(dataclasses.FrozenInstanceError):
        METHODS["lora"].quantized = True
    assert Method("lora", "LoRA", quantized=False, dora=False) == METHODS["lora"]


def test_zero_shot_label_names_the_4bit_base_then_the_details():
    assert zero_shot_label(False) == "zero-shot"
    assert zero_shot_label(True) == "zero-shot (4-bit base)"
    assert zero_shot_label(False, ["template=dataset"]) == "zero-shot (template=dataset)"
    details = ["template=dataset", "fp32"]
    assert zero_shot_label(True, details) == "zero-shot (4-bit base, template=dataset, fp32)"
    assert details == ["template=dataset", "fp32"]  # the caller's list is left as it was
