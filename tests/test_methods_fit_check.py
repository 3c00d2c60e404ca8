"""qlora_clip/methods/fit_check.py: a method's rank and config checked on the checkpoint's layers (meta device),
before any weights load, and PEFT's refusals said as the flag's error (qlora_clip/methods/refusals.py)."""
from __future__ import annotations

import dataclasses
import sys

import pytest

import main
from qlora_clip.backbones.loading import open_checkpoint
from qlora_clip.errors import UserError
from qlora_clip.methods.fit_check import RULES, check_fit, rank_error
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.methods.table import FULL_PRECISION_MODES, LOW_RANK, RANK_RULES, METHODS, RankBound

LAYERS = [("text.q", 64, 64), ("vision.q", 96, 96), ("vision.fc", 96, 48)]


def test_every_rank_rule_has_its_check():
    assert set(RULES) == set(RANK_RULES)
    assert {m.rank_bound.rule for m in METHODS.values() if m.rank_bound} <= set(RANK_RULES)


@pytest.mark.parametrize("rule, fits, too_large", [
    ("min(in, out)", 48, 49),   # the narrowest side of any layer: vision.fc's 48 outputs
    ("in", 64, 65),             # the narrowest input: text.q's 64
    ("divides in", 32, 12),     # 12 divides 96 but not 64
])
def test_rank_rules_bound_r_by_the_narrowest_targeted_layer(rule, fits, too_large, monkeypatch):
    method = METHODS["lora"]
    monkeypatch.setitem(METHODS, "lora", dataclasses.replace(method, rank_bound=RankBound(rule, "why")))
    assert rank_error(AdapterConfig(mode="lora", r=fits), LAYERS, "tiny") is None
    message = rank_error(AdapterConfig(mode="lora", r=too_large), LAYERS, "tiny")
    assert message.startswith(f"--r {too_large}: --mode lora needs r ")
    assert "of --backbone tiny (why)" in message


def test_the_lora_bound_names_the_layer_width():
    message = rank_error(AdapterConfig(mode="lora", r=100000), LAYERS, "tiny")
    assert "r <= min(in, out) of every layer it adapts: 48 for vision.fc (96 in, 48 out)" in message
    assert message.endswith("choose --r 48 or less")
    assert LOW_RANK.why in message


def test_a_method_without_a_rank_bound_takes_any_r():
    # VeRA's r is the rank of its shared random projections, larger than the layers by default (256 on 64).
    assert METHODS["vera"].rank_bound is None
    assert rank_error(AdapterConfig(mode="vera", r=100000), LAYERS, "tiny") is None


@pytest.mark.parametrize("mode", FULL_PRECISION_MODES)
def test_every_method_fits_the_tiny_checkpoint_at_its_defaults(mode):
    check_fit(AdapterConfig(mode=mode, total_steps=10), open_checkpoint("tiny"))


# --- through main.py: the flag's error, before any weights load ---------------------------------------

def cli_error(argv: list[str], monkeypatch, capsys) -> str:
    monkeypatch.setattr(main, "load_bundle", lambda *a, **k: pytest.fail("weights were loaded"))
    monkeypatch.setattr(sys, "argv", ["main.py", *argv])
    code = main.cli()
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("flags, says", [
    (["--mode", "boft", "--r", "5"], "--r 5: --mode boft: PEFT refuses this BOFTConfig on the layers of --backbone "
                                     "tiny (in_features (64) must be divisible by boft_block_size (5)!); change --r"),
    (["--mode", "fourierft", "--r", "100000"], "--r 100000: --mode fourierft: PEFT refuses this FourierFTConfig on the "
                                               "layers of --backbone tiny (`n_frequency` should be less than"),
    (["--mode", "shira", "--r", "5000"], "--r 5000: --mode shira: PEFT refuses this ShiraConfig on the layers"),
    (["--mode", "c3a", "--r", "3"], "--r 3: --mode c3a: PEFT refuses this C3AConfig on the layers"),
    (["--mode", "hra", "--r", "1000"], "--r 1000: --mode hra needs r <= the input width of every layer it adapts: 64 "
                                       "for text_model.encoder.layers.0.self_attn.q_proj (64 in, 64 out)"),
    (["--mode", "lora", "--r", "100000"], "--r 100000: --mode lora needs r <= min(in, out) of every layer it adapts: "
                                          "64 for"),
    (["--mode", "oft", "--r", "5"], "--r 5: --mode oft needs r to divide the input width of every layer it adapts"),
])
def test_a_method_that_does_not_fit_the_layers_is_the_flags_error(flags, says, tiny_argv, monkeypatch, capsys):
    assert says in cli_error(tiny_argv(*flags), monkeypatch, capsys)


def test_a_method_that_fits_goes_on_to_load_the_weights(tiny_argv, monkeypatch):
    def load_bundle(*args, **kwargs):
        raise UserError("loading")

    monkeypatch.setattr(main, "load_bundle", load_bundle)
    with pytest.raises(UserError, match="^loading$"):
        main.main(tiny_argv("--mode", "boft", "--r", "4"))
