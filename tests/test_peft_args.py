"""--peft_args key=value: any further field of the method's PEFT config, typed and checked before loading."""
from __future__ import annotations

import pytest
import torch

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.errors import UserError
from qlora_clip.methods import peft_args
from qlora_clip.methods.interface import load_adapted
from qlora_clip.methods.peft_tuners import method_args, peft_config
from qlora_clip.methods.table import METHODS
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.precision import resolve_precision
from run_utils import parse_args, run_spec
from trainer import TrainStep

CPU = torch.device("cpu")


def error_of(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        parse_args(argv)
    return capsys.readouterr().err


def test_values_take_the_fields_type_and_reach_the_peft_config():
    args = parse_args(["--mode", "vera", "--peft_args", "d_initial=0.2", "save_projection=false",
                       "projection_prng_key=7"])
    assert args.peft_args == ["d_initial=0.2", "projection_prng_key=7", "save_projection=false"]  # sorted
    adapter = run_spec(args).adapter
    config = peft_config(adapter, ["text_model.encoder.layers.0.self_attn.q_proj"])
    assert config.d_initial == 0.2
    assert config.save_projection is False
    assert config.projection_prng_key == 7
    lora = parse_args(["--mode", "lora", "--peft_args", "init_lora_weights=gaussian"])
    assert peft_config(run_spec(lora).adapter, ["x"]).init_lora_weights == "gaussian"


def test_an_unknown_key_lists_the_valid_ones(capsys):
    err = error_of(["--mode", "vera", "--peft_args", "d_inital=0.2"], capsys)
    assert "--peft_args d_inital: not a field of VeraConfig (--mode vera)" in err
    assert "valid keys: bias, d_initial, fan_in_fan_out, init_weights, projection_prng_key, save_projection" in err


def test_a_badly_typed_value_names_the_type(capsys):
    assert "--peft_args d_initial=high: expected a value of type float" in error_of(
        ["--mode", "vera", "--peft_args", "d_initial=high"], capsys)
    assert "--peft_args save_projection=2: expected a value of type bool" in error_of(
        ["--mode", "vera", "--peft_args", "save_projection=2"], capsys)
    assert "write key=value" in error_of(["--mode", "vera", "--peft_args", "d_initial"], capsys)


def test_fields_the_run_sets_itself_point_to_their_flag(capsys):
    assert "set it with --r, which is r for lora" in error_of(["--mode", "lora", "--peft_args", "r=4"], capsys)
    assert "set it with --r, which is oft_block_size for oft" in error_of(
        ["--mode", "oft", "--peft_args", "oft_block_size=16"], capsys)
    assert "use --mode dora" in error_of(["--mode", "lora", "--peft_args", "use_dora=true"], capsys)
    assert "not a field of VeraConfig" in error_of(["--mode", "vera", "--peft_args", "target_modules=[]"], capsys)


def test_a_config_peft_refuses_is_refused_before_loading(capsys):
    err = error_of(["--mode", "adalora", "--peft_args", "tinit=100000"], capsys)
    assert "--mode adalora: PEFT refuses this AdaLoraConfig" in err


@pytest.mark.parametrize("argv, says", [
    (["--mode", "loraplus", "--peft_args", "loraplus_lr_ratio=-1"], "--peft_args loraplus_lr_ratio=-1: "
                                                                   "loraplus_lr_ratio must be > 0 for --mode loraplus"),
    (["--mode", "loraplus", "--peft_args", "loraplus_lr_ratio=0"], "loraplus_lr_ratio must be > 0"),
    (["--mode", "loraplus", "--peft_args", "loraplus_lr_ratio=NaN"], "loraplus_lr_ratio must be > 0"),
    (["--mode", "adalora", "--peft_args", "beta1=1"],
     "--peft_args beta1=1: beta1 must be in (0, 1) for --mode adalora"),
    (["--mode", "loha", "--peft_args", "rank_dropout=1.5"], "rank_dropout must be in [0, 1) for --mode loha"),
    (["--mode", "lokr", "--peft_args", "decompose_factor=0"], "decompose_factor must be >= 1 or -1 for --mode lokr"),
    (["--mode", "vblora", "--peft_args", "num_vectors=0"], "num_vectors must be >= 1 for --mode vblora"),
])
def test_a_value_outside_the_methods_range_is_refused_before_loading(argv, says, capsys):
    assert says in error_of(argv, capsys)


def test_values_inside_the_range_and_its_special_values_are_taken():
    assert parse_args(["--mode", "lokr", "--peft_args", "decompose_factor=-1"]).peft_args == ["decompose_factor=-1"]
    assert parse_args(["--mode", "loraplus", "--peft_args", "loraplus_lr_ratio=0.5"]).peft_args == [
        "loraplus_lr_ratio=0.5"]


def test_every_declared_range_is_a_key_the_method_takes():
    for method in METHODS.values():
        assert set(method.ranges) <= set(peft_args.settable_fields(method)), method.name


def test_peft_refusing_its_own_sub_config_names_the_key(capsys):
    # EVA's rho is checked by PEFT's EvaConfig, which EVA's runtime builds beside the LoraConfig.
    err = error_of(["--mode", "eva", "--peft_args", "eva_rho=0"], capsys)
    assert ("main.py: error: --peft_args eva_rho=0: --mode eva: PEFT refuses this LoraConfig (`rho` must be >= 1.0)"
            in err)
    assert "Traceback" not in err


def test_a_refusal_that_names_no_setting_names_the_ones_the_run_changed():
    from qlora_clip.methods.refusals import refusal
    from qlora_clip.methods.settings import AdapterConfig

    settings = AdapterConfig(mode="boft", r=8, dropout_rate=0.1, peft_args=("boft_n_butterfly_factor=2",))
    message = str(refusal(settings, ValueError("something about the layers")))
    # --dropout_rate 0.1 is BOFT's default: not a suspect.
    assert message == ("--r 8, --peft_args boft_n_butterfly_factor=2: --mode boft: PEFT refuses this BOFTConfig "
                       "(something about the layers); change --r or --peft_args boft_n_butterfly_factor")
    named = str(refusal(settings, ValueError("boft_block_size (8) must divide 60")))
    assert named.startswith("--r 8: --mode boft")


def optimizer_lrs(*flags: str) -> list[float]:
    """The learning rates of the optimizer's parameter groups the trainer builds for the tiny model's run."""
    spec = run_spec(parse_args(["--backbone", "tiny", "--lr", "1e-3", *flags]))
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32)
    prompts = ClassPrompts(adapted.bundle.tokenizer, ["a red.", "a blue."], CPU)
    step = TrainStep(adapted, prompts, spec.train, resolve_precision("fp32", CPU),
                     Distributed(rank=0, world=1, device=CPU))
    return [group["lr"] for group in step.optimizer.param_groups]


def test_method_extras_are_set_like_fields_and_reach_the_training():
    spec = run_spec(parse_args(["--mode", "loraplus", "--peft_args", "loraplus_lr_ratio=4"]))
    assert method_args(spec.adapter) == {"loraplus_lr_ratio": 4}
    assert method_args(run_spec(parse_args(["--mode", "loraplus"])).adapter) == {"loraplus_lr_ratio": 16.0}
    assert method_args(run_spec(parse_args(["--mode", "lora"])).adapter) == {}
    # LoRA+ reads its ratio itself: B trains at ratio x --lr in the optimizer the trainer builds.
    assert optimizer_lrs("--mode", "loraplus", "--peft_args", "loraplus_lr_ratio=4") == [1e-3, 4e-3]
    assert optimizer_lrs("--mode", "loraplus") == [1e-3, 16e-3]
    assert optimizer_lrs("--mode", "lora") == [1e-3]
    with pytest.raises(UserError, match=r"not a field of LoraConfig \(--mode lora\)"):  # LoRA+'s, not LoRA's
        peft_args.parse(METHODS["lora"], ["loraplus_lr_ratio=4"])
    with pytest.raises(UserError, match="--mode bitfit that can be set; valid keys: none"):
        peft_args.parse(METHODS["bitfit"], ["lr=4"])


def test_two_spellings_of_one_setting_are_one_run():
    a = run_spec(parse_args(["--mode", "vera", "--peft_args", "d_initial=0.20", "init_weights=True"]))
    b = run_spec(parse_args(["--mode", "vera", "--peft_args", "init_weights=true", "d_initial=2e-1"]))
    assert a.identity == b.identity
    assert a.variant == b.variant != "vera"
