"""bench.py times every method in its own rows, with its ratios to LoRA's row at the same setting."""
from __future__ import annotations

import json

from bench import cli
from bench.gpu import GPU_PRESET
from qlora_clip.methods.table import NAMED_MODES


def test_each_method_gets_a_row_and_its_ratios_to_lora(tmp_path, capsys):
    modes = ["lora", "vera", "bitfit", "adalora", "eva"]
    cli.main(["--preset", "quick", "--modes", *modes, "--studies", "--out_dir", str(tmp_path)])
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    rows = {r["mode"]: r for r in report["rows"]}
    assert list(rows) == modes
    for r in rows.values():
        assert r["step_s"] > 0
        assert r["finite_loss"]
    assert rows["vera"]["dropout"] == 0.0  # each method at its defaults
    assert rows["lora"]["dropout"] == 0.25
    vs_lora = report["ratios"]["both_b4_fp32_ckptoff"]["vs_lora"]
    assert set(vs_lora) == set(modes) - {"lora"}
    bitfit, lora = rows["bitfit"]["trainable_params"], rows["lora"]["trainable_params"]
    assert vs_lora["bitfit"]["trainable_params"] == bitfit / lora
    for r in vs_lora.values():
        assert r["time"] > 0
        assert r["peak_memory"] > 0
        assert r["footprint"] > 0
    table = next(tmp_path.glob("*.md")).read_text()
    assert "| vera | " in table
    assert "Methods against LoRA, tiny, both encoders, batch 4, fp32" in table


def test_the_default_preset_times_every_method_and_the_gpu_preset_adds_them_as_a_study():
    settings = cli.parse_bench_args([])
    assert settings.modes == NAMED_MODES
    assert settings.backbone == "ViT-B/16"
    assert settings.batch_sizes == (8,)
    assert "methods" in GPU_PRESET["studies"]
    assert GPU_PRESET["batch_sizes"] == (32,)


def test_the_methods_study_measures_what_the_grid_lacks(monkeypatch):
    from bench import methods

    # cocoop: a prompt learner, which owns its logits (B x C text passes), gets its row like any adapter.
    monkeypatch.setattr(methods, "NAMED_MODES", ("lora", "ia3", "lntuning", "cocoop"))
    settings = cli.parse_bench_args(["--preset", "quick", "--modes", "lora", "--warmup", "0"])
    summary, rows = methods.run(settings, {"fp32": 1e12})
    assert [r["mode"] for r in rows] == ["ia3", "lntuning", "cocoop"]
    assert set(summary) == {"ia3", "lntuning", "cocoop"}
    assert summary["cocoop"]["step_s"] > 0 and summary["cocoop"]["trainable_params"] > 0
