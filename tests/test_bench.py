"""The benchmark (bench/): a fast smoke run on the tiny model, and checks that what it reports is right."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench import classes, cli
from bench.dora_dropout import use_adapter_dropout_dora
from bench.flops import train_step_flops
from bench.harness import load_model, random_batch
from bench.prompts import synthetic_prompts
from bench.step_time import StepTimer
from bench.suite import STUDIES
from qlora_clip.backbones.encode import ClassPrompts, image_features
from qlora_clip.paper import CONTEXT_LENGTH, LR
from trainer import TrainStep, build_optimizer

CPU = torch.device("cpu")


def test_quick_preset_writes_json_and_table(tmp_path, capsys):
    cli.main(["--preset", "quick", "--modes", "lora", "qlora", "--studies", "padding", "--out_dir", str(tmp_path)])

    [json_file] = tmp_path.glob("*.json")
    [md_file] = tmp_path.glob("*.md")
    report = json.loads(json_file.read_text())
    assert report["command"].startswith("bench.py --preset quick")
    assert report["args"]["backbone"] == "tiny"
    assert report["args"]["modes"] == ["lora", "qlora"]
    rows = [r for r in report["rows"] if not r.get("study")]
    assert [(r["mode"], r["encoder"]) for r in rows] == [("lora", "both"), ("qlora", "both")]
    for row in rows:
        assert row["step_s"] > 0
        assert row["finite_loss"]
        assert 0 < row["text_share"] + row["image_share"] <= 1
        assert 0 < row["utilization"] < 1
        assert row["eval_images_per_s"] > 0
    assert report["ratios"]["both_b4_fp32_ckptoff"]["qlora_over_lora_time"] > 0
    assert report["ratios"]["footprint"]["qlora_over_lora_fp32"] < 0.5
    padding = report["studies"]["padding"]
    assert (padding["longest_len"], padding["full_len"]) == (16, 77)
    assert padding["logits_max_abs_diff"] < 1e-4
    assert [r["study"] for r in report["rows"] if r.get("study")] == ["padding", "padding"]
    assert set(report["studies"]) == {"padding", "footprint_mb", "train_hours_vs_shots"}

    table = md_file.read_text()
    assert "| qlora | both | 4 | fp32 |" in table
    assert table in capsys.readouterr().out


def test_each_study_reports_its_summary_and_rows(monkeypatch):
    monkeypatch.setattr(classes, "CLASS_COUNTS", (3, 5))  # the real counts cost a minute here
    settings = cli.parse_bench_args(["--preset", "quick", "--warmup", "0"])
    peak = {"fp32": 1e12}  # utilization is not looked at here

    dequant, rows = STUDIES["dequant"](settings, peak)
    assert dequant["layers"] > 0
    assert dequant["all_layers_once_s"] > 0
    assert rows == []

    dora, rows = STUDIES["dora_dropout"](settings, peak)
    assert [(r["mode"], r["dropout"], r["adapter_dropout_dora"]) for r in rows] == [
        ("dora", 0.25, False), ("dora", 0.0, False), ("dora", 0.25, True), ("lora", 0.25, False)]
    assert dora["step_s_dora_adapter_dropout"] == rows[2]["step_s"]
    assert dora["peft_over_adapter_dropout"] == rows[0]["step_s"] / rows[2]["step_s"]

    by_classes, rows = STUDIES["classes"](settings, peak)
    assert [r["num_classes"] for r in rows] == [3, 5]
    assert list(by_classes) == [3, 5]
    assert by_classes[5]["step_s"] == rows[1]["step_s"]


def test_bad_flags_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        cli.parse_bench_args(["--prompt_tokens", "100"])
    assert "--prompt_tokens" in capsys.readouterr().err


def test_flags_override_the_preset():
    settings = cli.parse_bench_args(["--preset", "scaling", "--batch_sizes", "2", "--studies"])
    assert settings.batch_sizes == (2,)
    assert settings.studies == ()
    assert settings.modes == ("lora",)
    assert settings.backbone == "ViT-B/16"


def test_synthetic_prompts_have_the_requested_token_lengths():
    _, _, adapted = load_model("tiny", "fp32", CPU)
    bundle = adapted.bundle
    prompts = synthetic_prompts(bundle.tokenizer, 5, 12)
    assert ClassPrompts(bundle.tokenizer, prompts, CPU).attention_mask.sum(1).tolist() == [8, 9, 10, 11, 12]
    full = ClassPrompts(bundle.tokenizer, prompts, CPU, padding="max_length")
    assert full.input_ids.shape == (5, CONTEXT_LENGTH)


@pytest.mark.parametrize("encoder", ["both", "vision"])
def test_flop_formula_matches_pytorch_flop_counter(encoder):
    """The documented formula (bench/flops.py) counts what the step's matrix multiplies really do."""
    _, precision, adapted = load_model("tiny", "fp32", CPU, encoder=encoder)
    bundle, model = adapted.bundle, adapted.model
    tokenizer = bundle.tokenizer
    # The counter does not see the CPU's fused attention kernel; eager attention is plain matmuls.
    model.base_model.model.set_attn_implementation("eager")
    prompts = ClassPrompts(tokenizer, synthetic_prompts(tokenizer, 7, 14), CPU)
    timer = StepTimer(adapted, prompts, precision)
    assert (timer.step_fn.cached_text is None) == (encoder == "both")
    images, labels = random_batch(3, bundle.image.image_size, 7, CPU)
    with FlopCounterMode(display=False) as counter:
        timer.step(images, labels)
    expected = train_step_flops(model.config, 3, 7, 14, encoder)
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.005)


def test_step_timer_gives_the_gradients_of_one_backward():
    """The benchmark's step is the trainer's, and splitting its backward by tower changes nothing it computes."""
    _, precision, adapted = load_model("tiny", "fp32", CPU, dropout=0.0)
    bundle, model = adapted.bundle, adapted.model
    logits = bundle.family.logits(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    prompts = ClassPrompts(bundle.tokenizer, synthetic_prompts(bundle.tokenizer, 4, 10), CPU)
    images, labels = random_batch(2, bundle.image.image_size, 4, CPU)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}

    model.train()
    loss = F.cross_entropy(logits(image_features(model, images), prompts.features(model)), labels)
    loss.backward()
    expected = {n: p.grad.clone() for n, p in trainable.items()}
    model.zero_grad(set_to_none=True)

    timer = StepTimer(adapted, prompts, precision)
    # The benchmark times the trainer's own step, with the optimizer every run builds.
    assert type(timer.step_fn) is TrainStep
    reference = build_optimizer(list(trainable.values()), LR, CPU)
    assert timer.step_fn.optimizer.defaults == reference.defaults
    timer.step_fn.optimizer.step = lambda: None  # keep the weights, look at the gradients
    timer.step_fn.optimizer.zero_grad = lambda set_to_none=True: None
    timer.step(images, labels)
    assert any(expected[n].abs().sum() > 0 for n in expected if "text_model" in n)
    for name, param in trainable.items():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_adapter_dropout_dora_changes_only_where_dropout_acts(dropout):
    """The proposed DoRA variant equals PEFT's DoRA in evaluation, and in training without dropout."""
    _, _, adapted = load_model("tiny", "fp32", CPU, "dora", dropout=dropout)
    bundle, model = adapted.bundle, adapted.model
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
    use_adapter_dropout_dora(model)
    torch.testing.assert_close(features(False), peft_eval)
    assert torch.allclose(features(True), peft_train, atol=1e-6) == (dropout == 0.0)


def test_protocol_study_runs_main_end_to_end_per_method(tmp_path):
    """The GPU preset's end-to-end run, shrunk: the figures come from main.py's results lines."""
    from bench import end_to_end

    results = end_to_end.run_protocol("tiny", "cpu", n_iters=2, classes=4, train=9, test=8, size=(40, 30))
    assert results["write_data_s"] > 0
    for mode in ("lora", "qlora"):
        run = results[mode]
        assert run["steps"] == 2 * end_to_end.SHOTS
        assert run["train_images_seen"] == 8 * 16
        assert run["train_s"] > 0
        assert run["total_s"] > run["train_s"]
        assert run["ms_per_step"] > 0
        assert run["input_wait_s"] > 0
        assert run["input_wait_s"] < run["train_s"]  # in-process loading (CPU: no workers), inside the loop
        assert run["peak_memory_mb"] > 0
        assert run["memory_kind"] == "cpu_rss"
    assert not results["lora"]["test_images_cached_before"]
    assert results["qlora"]["test_images_cached_before"]
