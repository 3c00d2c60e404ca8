"""Every baseline through the real entry point (`main.py --mode NAME`) on the tiny model: the results
line, the tables, the refused flags, and Fashion-MNIST's real images."""
from __future__ import annotations

import math

import pytest

import main
import summarize
from datasets.fashion_mnist import SYSTEM_FOLDER
from qlora_clip.run import schema
from qlora_clip.methods.table import BASELINE_MODES, METHODS
from run_utils import parse_args

TINY_DIM = 64     # the tiny checkpoint's embedding width
COLOURS = 4       # conftest's colour folder: classes
SHOTS = 2


def argv(root, tmp, mode: str, dataset: str = "folder", shots: int = SHOTS) -> list[str]:
    return ["--backbone", "tiny", "--dataset", dataset, "--root_path", str(root), "--shots", str(shots),
            "--mode", mode, "--eval_cache_dir", str(tmp / "cache"), "--results_file", str(tmp / "results.jsonl")]


@pytest.fixture(scope="module")
def runs(color_folder, tmp_path_factory):
    """One run of each baseline on the colour folder, sharing a feature cache and a results file."""
    tmp = tmp_path_factory.mktemp("baselines")
    records = {mode: main.main(argv(color_folder, tmp, mode)) for mode in BASELINE_MODES}
    return records, tmp / "results.jsonl"


def expected_trainable(mode: str, images: int) -> int:
    return {"zs_ensemble_imagenet": 0, "zs_ensemble_dataset": 0, "tip_adapter": 0,
            "linear_probe": COLOURS * (TINY_DIM + 1), "lp_plus_plus": COLOURS * (TINY_DIM + 2),
            "tip_adapter_f": images * TINY_DIM, "clip_adapter": 2 * TINY_DIM * TINY_DIM // 4,
            "coop": 16 * TINY_DIM}[mode]


@pytest.mark.parametrize("mode", BASELINE_MODES)
def test_each_baseline_writes_a_full_results_line(runs, mode):
    record = runs[0][mode]
    schema.check(record)
    assert record["mode"] == mode and METHODS[mode].kind == "baseline"
    assert 0 <= record["test_acc"] <= 100 and math.isfinite(record["zero_shot_acc"])
    assert record["train_seconds"] >= 0 and record["eval_seconds"] > 0
    assert record["peak_memory_mb"] > 0 and record["memory_kind"] == "cpu_rss"
    assert record["trainable_params"] == expected_trainable(mode, COLOURS * SHOTS)
    assert record["model_footprint_mb"] > 0 and not record["quantized"]
    assert "test" in record["baseline_features"]
    assert record["baseline_params"]["source"] == METHODS[mode].published["source"]
    # Every run of the module reads the same test features: encoded by the first, cached for the rest.
    assert record["baseline_features"]["test"]["cached"] == (mode != BASELINE_MODES[0])


def test_searched_and_scheduled_values_are_recorded(runs):
    records = runs[0]
    assert records["zs_ensemble_imagenet"]["baseline_params"]["template_set"] == "clip-imagenet-80"
    assert records["zs_ensemble_imagenet"]["baseline_params"]["templates"] == 80
    assert records["linear_probe"]["baseline_params"]["C"] > 0
    assert {"alpha", "beta"} <= records["tip_adapter"]["baseline_params"].keys()
    assert records["coop"]["baseline_params"]["epochs"] == 100 and records["coop"]["total_steps"] == 100
    assert records["clip_adapter"]["baseline_features"]["train-dassl-epochs"]["views"] == 200
    assert records["tip_adapter_f"]["baseline_features"]["train-tip-cache"]["cached"]  # Tip-Adapter's views


def test_baselines_appear_in_the_paper_and_efficiency_tables(runs, tmp_path, capsys):
    assert summarize.main([str(runs[1]), "--tables", "paper,efficiency", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    paper, efficiency = out.split("## Efficiency")
    for mode in BASELINE_MODES:
        assert f"| {mode} | {SHOTS} |" in paper
        assert f"| {SHOTS} | {mode} |" in efficiency


@pytest.mark.parametrize("flag, value", [("--lr", "0.1"), ("--n_iters", "3"), ("--r", "4"),
                                         ("--protocol", "base2new"), ("--save_path", "out")])
def test_a_baseline_refuses_the_peft_flags_it_would_ignore(flag, value, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--mode", "coop", flag, value])
    assert f"{flag} {value}: --mode coop is a baseline" in capsys.readouterr().err


@pytest.mark.skipif(not SYSTEM_FOLDER.exists(), reason="apt-get install dataset-fashion-mnist")
@pytest.mark.parametrize("mode", BASELINE_MODES)
def test_each_baseline_runs_on_fashion_mnist(mode, tmp_path_factory):
    tmp = tmp_path_factory.getbasetemp() / "fashion-baselines"  # one feature cache for the parameters
    tmp.mkdir(exist_ok=True)
    record = main.main(argv(tmp, tmp, mode, dataset="fashion_mnist"))
    assert record["test_images_per_process"] == [10_000]
    assert record["baseline_features"]["test"]["images"] == 10_000
    if mode == "linear_probe":  # even on the random tiny model, a probe on frozen features beats chance
        assert record["test_acc"] > record["zero_shot_acc"] + 10
    if record["final_loss"] is not None:
        assert math.isfinite(record["final_loss"])


def test_a_baseline_on_another_family_is_refused_before_its_weights_load(color_folder, tmp_path, monkeypatch):
    from qlora_clip.methods.baselines import backbone
    from qlora_clip.errors import UserError

    monkeypatch.setattr(backbone, "load_base_model", lambda *a, **k: pytest.fail("the weights were loaded"))
    with pytest.raises(UserError, match=r"--mode tip_adapter: the baselines run on CLIP-format checkpoints only.*"
                                        r"--backbone tiny-siglip is a SigLIP checkpoint"):
        main.main([*argv(color_folder, tmp_path, "tip_adapter"), "--backbone", "tiny-siglip"])
