"""The 4-bit base as an axis: every method whose entry says PEFT 0.21 trains it on bitsandbytes 4-bit
layers does (on the CPU), with the NF4 weights untouched and zero-shot on the 4-bit base; every other
method's --quantize 4bit is refused before anything loads, naming the methods that support it."""
from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from test_methods_training import clip_logits, one_step, tiny_batch

from qlora_clip.backbones.loading import load_base_model, open_checkpoint
from qlora_clip.methods.table import BASE_METHODS, METHODS, PROMPT_MODES, four_bit_methods
from run_utils import parse_args, run_spec

CPU = torch.device("cpu")
# The prompt learners' 4-bit entries: tests/test_methods_prompts.py (their tokens are not in the towers' layers).
QUANTIZED = [name for name, m in METHODS.items() if m.quantized and name not in PROMPT_MODES]
NOT_ON_4BIT = [m.name for m in BASE_METHODS if not m.four_bit]


@pytest.mark.parametrize("mode", QUANTIZED)
def test_4bit_methods_train_their_weights_and_leave_the_nf4_base_alone(mode):
    adapted, prompts, before = one_step(mode)
    model = adapted.model
    layers = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(layers) == 72  # every q/k/v, o and MLP projection of both towers: the base really is 4-bit
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed
    assert changed <= trainable
    fields = adapted.fields()
    assert adapted.trainable_parameters() == fields["trainable_params"] == fields["adapter_params"]
    for n, layer in layers.items():
        assert layer.weight.dtype == torch.uint8, n
        assert f"{n}.weight" not in changed
    for tower in ("text_model", "vision_model"):
        assert adapted.tower_is_adapted(tower)
        assert any(f".{tower}." in f".{n}" for n in changed)

    # Zero-shot is the 4-bit base's: the same as QLoRA's, whatever the method (LoftQ's A, B start non-zero).
    qlora = run_spec(parse_args(["--backbone", "tiny", "--mode", "qlora"])).adapter
    base = load_base_model(open_checkpoint("tiny"), qlora.method.quantized, CPU, torch.float32)
    images, _ = tiny_batch(1)
    with adapted.zero_shot_view():
        zero_shot = clip_logits(model, prompts, images)
    torch.testing.assert_close(zero_shot, clip_logits(base, prompts, images), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", NOT_ON_4BIT)
def test_4bit_is_refused_before_loading_for_methods_peft_cannot_train_on_it(mode, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--mode", mode, "--quantize", "4bit"])
    err = capsys.readouterr().err
    assert f"--quantize 4bit: {mode} does not train on a 4-bit base" in err
    assert all(name in err for name in four_bit_methods())


def test_the_4bit_axis_keeps_qlora_and_qdora_and_names_the_others():
    assert parse_args(["--mode", "lora", "--quantize", "4bit"]).mode == "qlora"
    assert parse_args(["--mode", "dora", "--quantize", "4bit"]).mode == "qdora"
    assert parse_args(["--mode", "ia3", "--quantize", "4bit"]).mode == "ia3-4bit"
    assert parse_args(["--mode", "qlora"]).quantize == "4bit"
    assert parse_args(["--mode", "ia3"]).quantize == "none"
    assert run_spec(parse_args(["--mode", "vera", "--quantize", "4bit"])).name.startswith("vera-4bit-")
