"""The benchmark harness: a fast smoke run on the tiny model, and checks that what it reports is right."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import bench
from features import ClassPrompts, image_features
from protocol import LOGIT_SCALE

CPU = torch.device("cpu")


def test_quick_preset_writes_json_and_table(tmp_path, capsys):
    report = bench.main(["--preset", "quick", "--modes", "lora", "qlora", "--studies", "padding",
                         "--out_dir", str(tmp_path)])

    rows = [r for r in report["rows"] if not r.get("study")]
    assert [(r["mode"], r["encoder"]) for r in rows] == [("lora", "both"), ("qlora", "both")]
    for row in rows:
        assert row["step_s"] > 0 and row["finite_loss"]
        assert 0 < row["text_share"] + row["image_share"] <= 1
        assert 0 < row["utilization"] < 1
        assert row["eval_images_per_s"] > 0
    assert report["ratios"]["both_b4_fp32_ckptoff"]["qlora_over_lora_time"] > 0
    assert report["ratios"]["footprint"]["qlora_over_lora_fp32"] < 0.5
    padding = report["studies"]["padding"]
    assert (padding["longest_len"], padding["full_len"]) == (16, 77)
    assert padding["logits_max_abs_diff"] < 1e-4

    [json_file] = tmp_path.glob("*.json")
    [md_file] = tmp_path.glob("*.md")
    assert json.loads(json_file.read_text())["rows"][0]["mode"] == "lora"
    table = md_file.read_text()
    assert "| qlora | both | 4 | fp32 |" in table and table in capsys.readouterr().out


def test_bad_flags_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        bench.parse_bench_args(["--prompt_tokens", "100"])
    assert "--prompt_tokens" in capsys.readouterr().err


def test_synthetic_prompts_have_the_requested_token_lengths():
    _, _, bundle = bench.load("tiny", "lora", "both", "fp32", False, CPU)
    prompts = ClassPrompts(bundle.tokenizer, bench.synthetic_prompts(bundle.tokenizer, 5, 12), CPU)
    assert prompts.attention_mask.sum(1).tolist() == [8, 9, 10, 11, 12]
    full = bench.FullContextPrompts(bundle.tokenizer, bench.synthetic_prompts(bundle.tokenizer, 5, 12), CPU)
    assert full.input_ids.shape == (5, 77)


@pytest.mark.parametrize("encoder", ["both", "vision"])
def test_flop_formula_matches_pytorch_flop_counter(encoder):
    """The documented formula counts what the step's matrix multiplies really do."""
    _, precision, bundle = bench.load("tiny", "lora", encoder, "fp32", False, CPU)
    tokenizer, model = bundle.tokenizer, bundle.model
    # The counter does not see the CPU's fused attention kernel; eager attention is plain matmuls.
    model.base_model.model.set_attn_implementation("eager")
    prompts = ClassPrompts(tokenizer, bench.synthetic_prompts(tokenizer, 7, 14), CPU)
    timer = bench.StepTimer(model, prompts, precision, reencode_text=encoder != "vision")
    images, labels = bench.random_batch(3, bundle.image.image_size, 7, CPU)
    with FlopCounterMode(display=False) as counter:
        timer.step(images, labels)
    expected = bench.train_step_flops(model.config, 3, 7, 14, encoder)
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.005)


def test_step_timer_gives_the_gradients_of_one_backward():
    """Splitting the backward by tower must not change what a training step computes."""
    _, precision, bundle = bench.load("tiny", "lora", "both", "fp32", False, CPU, dropout=0.0)
    model = bundle.model
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    prompts = ClassPrompts(bundle.tokenizer, bench.synthetic_prompts(bundle.tokenizer, 4, 10), CPU)
    images, labels = bench.random_batch(2, bundle.image.image_size, 4, CPU)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}

    model.train()
    loss = F.cross_entropy(LOGIT_SCALE * image_features(model, images) @ prompts.features(model).T, labels)
    loss.backward()
    expected = {n: p.grad.clone() for n, p in trainable.items()}
    model.zero_grad(set_to_none=True)

    timer = bench.StepTimer(model, prompts, precision, reencode_text=True)
    timer.optimizer.step = lambda: None  # keep the weights, look at the gradients
    timer.optimizer.zero_grad = lambda set_to_none=True: None
    timer.step(images, labels)
    assert any(expected[n].abs().sum() > 0 for n in expected if "text_model" in n)
    for name, param in trainable.items():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_adapter_dropout_dora_changes_only_where_dropout_acts(dropout):
    """The proposed DoRA variant equals PEFT's DoRA in evaluation, and in training without dropout."""
    _, _, bundle = bench.load("tiny", "dora", "both", "fp32", False, CPU, dropout=dropout)
    model = bundle.model
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    images = torch.randn(3, 3, bundle.image.image_size, bundle.image.image_size)

    def features(train: bool) -> torch.Tensor:
        model.train(train)
        torch.manual_seed(0)
        return image_features(model, images)

    peft_eval, peft_train = features(False), features(True)
    bench.use_adapter_dropout_dora(model)
    torch.testing.assert_close(features(False), peft_eval)
    assert torch.allclose(features(True), peft_train, atol=1e-6) == (dropout == 0.0)
