"""qlora_clip/methods/table.py: the seed's four methods and the baselines in the one table, and how zero-shot
rows are labelled (test_methods_table.py checks every adapter entry's defaults and 4-bit twins)."""
from __future__ import annotations

import dataclasses

import pytest

from qlora_clip.methods.peft_tuners import peft_config
from qlora_clip.methods.baselines import hparams
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.methods.table import (
    ADAPTER_MODES,
    BASELINE_MODES,
    FULL_PRECISION_MODES,
    METHODS,
    MODES,
    NAMED_MODES,
    resolve_flags,
    zero_shot_label,
)
from run_utils import build_parser

SEED_FOUR = ("lora", "qlora", "dora", "qdora")


def test_every_method_is_named_once_and_the_mode_flag_takes_them_all():
    assert all(name == method.name for name, method in METHODS.items())  # the key is the --mode value
    assert MODES[:4] == SEED_FOUR
    assert [METHODS[m].label for m in SEED_FOUR] == ["LoRA", "QLoRA", "DoRA", "QDoRA"]
    mode_flag = next(a for a in build_parser()._actions if a.dest == "mode")
    assert tuple(mode_flag.choices) == MODES
    assert set(ADAPTER_MODES) | set(BASELINE_MODES) == set(MODES)
    assert not set(ADAPTER_MODES) & set(BASELINE_MODES)


def test_qlora_and_qdora_quantize_the_base_and_dora_and_qdora_are_dora():
    four = [METHODS[m] for m in SEED_FOUR]
    assert {m.name for m in four if m.quantized} == {"qlora", "qdora"}
    assert {m.name for m in four if m.dora} == {"dora", "qdora"}
    assert METHODS["qlora"].base_method == "lora"
    assert METHODS["qdora"].base_method == "dora"


@pytest.mark.parametrize("mode", SEED_FOUR)
def test_the_adapter_config_takes_dora_from_the_table(mode):
    config = peft_config(AdapterConfig(mode), ["text_model.encoder.layers.0.self_attn.q_proj"])
    assert config.use_dora is METHODS[mode].dora
    assert config.r == 2
    assert config.use_rslora


def test_methods_cannot_be_changed_in_place():
    with pytest.raises(dataclasses.FrozenInstanceError):
        METHODS["lora"].quantized = True


def test_the_baselines_are_entries_with_their_papers_hyperparameters_and_no_adapter_flags():
    assert BASELINE_MODES == ("zs_ensemble_imagenet", "zs_ensemble_dataset", "linear_probe", "lp_plus_plus",
                              "tip_adapter", "tip_adapter_f", "clip_adapter", "coop", "proker", "clap")
    for mode in BASELINE_MODES:
        method = METHODS[mode]
        # Fitted on the frozen base's features (the old kind "baseline"), never by the training loop.
        assert method.trains_on == "features"
        assert not method.quantized
        assert not method.mergeable
        assert method.published["source"] == method.defaults.source
    assert METHODS["coop"].published == hparams.COOP
    # Every other entry trains through the towers in the shared loop (the old kind "peft").
    assert all(METHODS[m].trains_on == "images" for m in ADAPTER_MODES)
    # The adapter groups that sweeps and benchmarks expand never hold a baseline.
    assert not set(BASELINE_MODES) & (set(NAMED_MODES) | set(FULL_PRECISION_MODES))
    # A baseline's lr, r, ... stay unset in its line: it does not use them.
    flags = resolve_flags({"mode": "linear_probe", "lr": None, "r": None, "quantize": None})
    assert flags["lr"] is None
    assert flags["r"] is None
    assert flags["quantize"] is None
    assert resolve_flags({"mode": "lora", "lr": None})["lr"] == 2e-4


def test_zero_shot_label_names_the_4bit_base_then_the_details():
    assert zero_shot_label(False) == "zero-shot"
    assert zero_shot_label(True) == "zero-shot (4-bit base)"
    assert zero_shot_label(False, ["template=dataset"]) == "zero-shot (template=dataset)"
    details = ["template=dataset", "fp32"]
    assert zero_shot_label(True, details) == "zero-shot (4-bit base, template=dataset, fp32)"
    assert details == ["template=dataset", "fp32"]  # the caller's list is left as it was
