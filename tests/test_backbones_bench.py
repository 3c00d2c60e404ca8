"""The benchmark on every family: one run measures several backbones' grids and compares them with the first;
the FLOP formula counts SigLIP's attention-pooling head and MetaCLIP 2's towers as the step computes them."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import cli
from bench.flops import train_step_flops
from bench.harness import load_model, random_batch
from bench.prompts import synthetic_prompts
from bench.step_time import StepTimer
from qlora_clip.backbones.encode import ClassPrompts

CPU = torch.device("cpu")
TINY = ["tiny", "tiny-siglip", "tiny-siglip2", "tiny-metaclip2"]


def test_one_run_measures_each_familys_grid_against_the_first(tmp_path, capsys):
    cli.main(["--preset", "quick", "--backbone", *TINY, "--modes", "lora", "qlora", "--studies", "padding",
              "--warmup", "0", "--out_dir", str(tmp_path)])
    [json_file] = tmp_path.glob("bench-quick-tiny+tiny-siglip+tiny-siglip2+tiny-metaclip2-*.json")
    report = json.loads(json_file.read_text())
    rows = [r for r in report["rows"] if not r.get("study")]
    assert [(r["backbone"], r["mode"]) for r in rows] == [(b, m) for b in TINY for m in ("lora", "qlora")]
    assert [r["family"] for r in rows[::2]] == ["clip", "siglip", "siglip2", "metaclip_2"]
    for r in rows:
        assert r["step_s"] > 0
        assert r["finite_loss"]
        assert 0 < r["utilization"] < 1
    # SigLIP's prompts are padded to its fixed 64 tokens, CLIP's and MetaCLIP 2's to the longest (16).
    assert [r["prompt_len"] for r in rows[::2]] == [16, 64, 64, 16]
    assert [r["padding"] for r in rows[::2]] == ["longest", "max_length", "max_length", "longest"]
    compared = report["studies"]["backbones"]
    assert sorted(compared) == sorted(f"{b}_{m}_both_b4_fp32" for b in TINY[1:] for m in ("lora", "qlora"))
    for entry in compared.values():
        assert entry["step_time_over_first"] > 0
        assert entry["peak_memory_over_first"] > 0
        assert entry["footprint_over_first"] > 0
    assert "tiny-siglip_both_b4_fp32_ckptoff" in report["ratios"]
    assert "both_b4_fp32_ckptoff" in report["ratios"]
    assert report["studies"]["padding"]["logits_max_abs_diff"] < 1e-4  # on the first backbone, CLIP's
    table = capsys.readouterr().out
    assert "| tiny-siglip2 | qlora | both | 4 | fp32 |" in table
    assert "| tiny-metaclip2_lora_both_b4_fp32 | metaclip_2 |" in table


def test_the_padding_study_is_skipped_for_siglip(tmp_path):
    from bench import padding

    settings = cli.parse_bench_args(["--preset", "quick", "--backbone", "tiny-siglip", "--out_dir", str(tmp_path)])
    summary, rows = padding.run(settings, {"fp32": 1e12})
    assert rows == []
    assert "fixed length" in summary["skipped"]


def test_backbone_flags_are_checked(capsys):
    assert cli.parse_bench_args(["--backbone", "SigLIP-B/16", "ViT-B/16"]).backbones == ("SigLIP-B/16", "ViT-B/16")
    with pytest.raises(SystemExit):
        cli.parse_bench_args(["--backbone", "tiny", "tiny"])
    assert "lists a backbone twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_bench_args(["--backbone", "SigLIP-B/32"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("backbone, encoder", [("tiny-siglip", "both"), ("tiny-siglip", "vision"),
                                               ("tiny-siglip", "text"), ("tiny-metaclip2", "both")])
def test_flop_formula_matches_pytorch_flop_counter(backbone, encoder):
    _, precision, adapted = load_model(backbone, "fp32", CPU, encoder=encoder)
    model, bundle = adapted.model, adapted.bundle
    # The counter does not see the CPU's fused attention kernel; eager attention is plain matmuls.
    model.base_model.model.set_attn_implementation("eager")
    prompts = ClassPrompts(bundle.tokenizer, synthetic_prompts(bundle.tokenizer, 7, 14,
                                                               exact=bundle.text.pooled_at_end_of_text),
                           CPU, text=bundle.text)
    timer = StepTimer(adapted, prompts, precision)
    images, labels = random_batch(3, bundle.image.image_size, 7, CPU)
    with FlopCounterMode(display=False) as counter:
        timer.step(images, labels)
    expected = train_step_flops(model.config, 3, 7, prompts.input_ids.shape[1], encoder)
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.005)
