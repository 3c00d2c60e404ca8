"""qlora_clip/methods/peft_tuners.py: LoRA, QLoRA, DoRA and QDoRA built and trained exactly as before the
methods table (the old code path recomputed here), the tower rule on a frozen --eval_only model, the results
line's config, and a saved adapter refused when the flags describe another."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

import main
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.families import CLIP
from qlora_clip.backbones.loading import load_base_model, open_checkpoint
from qlora_clip.backbones.targets import target_module_names
from qlora_clip.errors import UserError
from qlora_clip.methods.interface import Adapted, load_adapted
from qlora_clip.methods.peft_tuners import PeftAdapter, peft_config
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.precision import resolve_precision
from run_utils import parse_args, run_spec
from trainer import TrainStep

CPU = torch.device("cpu")
FP32 = resolve_precision("fp32", CPU)
PROMPTS = ["a photo of a red.", "a photo of a green thing.", "a blue.", "yellow"]


def old_lora_config(spec, targets) -> LoraConfig:
    """model.lora_config as it was before the methods table: the four modes' one code path."""
    a = spec.adapter
    return LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout_rate, target_modules=targets,
                      use_rslora=a.rslora, use_dora=a.mode in ("dora", "qdora"), bias="none")


def train_two_steps(adapted: Adapted, spec) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    step = TrainStep(adapted, ClassPrompts(adapted.bundle.tokenizer, PROMPTS, CPU), spec.train, FP32,
                     Distributed(rank=0, world=1, device=CPU))
    for _ in range(2):
        images, labels = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 4, (8,), generator=g)
        step([(images, labels)], 8)
    return {n: p.detach().clone() for n, p in adapted.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("mode", ["lora", "qlora", "dora", "qdora"])
def test_the_seeds_four_modes_train_the_same_weights_bit_for_bit_as_the_old_code_path(mode):
    spec = run_spec(parse_args(["--backbone", "tiny", "--mode", mode, "--lr", "1e-2", "--shots", "1",
                                "--n_iters", "2"]))
    torch.manual_seed(1)
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32)
    new = train_two_steps(adapted, spec)

    torch.manual_seed(1)
    base = load_base_model(open_checkpoint("tiny"), spec.adapter.method.quantized, CPU, torch.float32)
    targets = target_module_names(CLIP, base.config, "both", "all", ["q", "k", "v"])
    expected = old_lora_config(spec, targets)
    built = peft_config(spec.adapter, targets)
    assert built.to_dict() == expected.to_dict()
    # The old path's model (a hand-built LoraConfig), through the same training step as every PEFT tuner.
    old_model = get_peft_model(base, expected)
    old = train_two_steps(PeftAdapter(dataclasses.replace(adapted.bundle, model=base), spec.adapter, old_model), spec)
    assert new.keys() == old.keys()
    for k in new:
        assert torch.equal(new[k], old[k]), k


def test_a_frozen_eval_only_model_still_counts_as_adapted(tiny_argv, tmp_path):
    """--eval_only loads the adapter frozen: no parameter trains, yet both towers compute with it, so the
    evaluator must not reuse zero-shot image features (nor the trainer cache prompts)."""
    for mode in ("vera", "lntuning", "bitfit"):
        main.main(tiny_argv("--mode", mode, "--save_path", str(tmp_path)))
        spec = run_spec(parse_args(tiny_argv("--mode", mode, "--save_path", str(tmp_path), "--eval_only")))
        adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32, saved=spec.adapter_dir)
        assert not any(p.requires_grad for p in adapted.model.parameters())
        assert adapted.tower_is_adapted("text_model"), mode
        assert adapted.tower_is_adapted("vision_model"), mode


def test_the_results_line_records_the_effective_config(tiny_argv):
    record = main.main(tiny_argv("--mode", "adalora", "--n_iters", "2"))
    config = record["peft_config"]
    json.dumps(config)  # JSON, as the line is
    assert config["peft_type"] == "ADALORA"
    assert config["target_r"] == 2
    assert config["init_r"] == 3
    assert config["total_step"] == record["total_steps"] == 8
    assert config["rank_pattern"]  # what the allocator kept
    assert len(config["target_modules"]) == 36
    assert record["method_args"] == {}
    lora = main.main(tiny_argv("--mode", "loraplus"))
    assert lora["peft_config"]["use_rslora"]
    assert lora["method_args"] == {"loraplus_lr_ratio": 16.0}


def test_a_saved_adapter_is_refused_when_the_flags_describe_another(tiny_argv, tmp_path):
    main.main(tiny_argv("--mode", "vera", "--r", "16", "--save_path", str(tmp_path)))
    folder = run_spec(parse_args(tiny_argv("--mode", "vera", "--r", "16", "--save_path", str(tmp_path)))).adapter_dir
    other = run_spec(parse_args(tiny_argv("--mode", "vera", "--r", "32")))
    with pytest.raises(UserError, match=r"saved with r=16, but the flags ask for 32; pass the --r"):
        load_adapted(other.backbone, other.adapter, CPU, torch.float32, saved=folder)
    elsewhere = run_spec(parse_args(tiny_argv("--mode", "vera", "--r", "16", "--params", "q", "v")))
    with pytest.raises(UserError, match=r"sits on 36 modules, but the flags select 24"):
        load_adapted(elsewhere.backbone, elsewhere.adapter, CPU, torch.float32, saved=folder)
    ia3 = run_spec(parse_args(tiny_argv("--mode", "ia3")))
    with pytest.raises(UserError, match=r"is a VERA adapter, but --mode ia3 makes IA3"):
        load_adapted(ia3.backbone, ia3.adapter, CPU, torch.float32, saved=folder)
