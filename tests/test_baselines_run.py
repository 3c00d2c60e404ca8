"""Every baseline through the real entry point (`main.py --mode NAME`) on the tiny model: the results
line, the tables, the refused flags, and Fashion-MNIST's real images."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

import main
import summarize
from datasets.fashion_mnist import SYSTEM_FOLDER
from qlora_clip.methods.baselines.base import FeatureBaseline
from qlora_clip.methods.table import BASELINE_MODES, METHODS
from qlora_clip.run import schema
from run_utils import parse_args

TINY_DIM = 64     # the tiny checkpoint's embedding width
COLOURS = 4       # conftest's colour folder: classes
SHOTS = 2


def argv(root, tmp, mode: str, dataset: str = "folder", shots: int = SHOTS) -> list[str]:
    return ["--backbone", "tiny", "--dataset", dataset, "--root_path", str(root), "--shots", str(shots),
            "--mode", mode, "--eval_cache_dir", str(tmp / "cache"), "--results_file", str(tmp / "results.jsonl")]


@pytest.fixture(scope="module")
def runs(color_folder, tmp_path_factory):
    """One run of each baseline on the colour folder, sharing a feature cache and a results file; with how many
    test images each run's evaluator encoded (through the method's image_embeddings)."""
    tmp = tmp_path_factory.mktemp("baselines")
    records, encoded = {}, {}
    image_embeddings = FeatureBaseline.image_embeddings
    with pytest.MonkeyPatch.context() as patch:
        for mode in BASELINE_MODES:
            counts = encoded[mode] = []

            def counted(self, images, counts=counts):
                counts.append(len(images))
                return image_embeddings(self, images)
            patch.setattr(FeatureBaseline, "image_embeddings", counted)
            records[mode] = main.main(argv(color_folder, tmp, mode))
    return records, tmp / "results.jsonl", {mode: sum(counts) for mode, counts in encoded.items()}


def expected_trainable(mode: str, images: int) -> int:
    return {"zs_ensemble_imagenet": 0, "zs_ensemble_dataset": 0, "tip_adapter": 0,
            "linear_probe": COLOURS * (TINY_DIM + 1), "lp_plus_plus": COLOURS * (TINY_DIM + 2),
            "tip_adapter_f": images * TINY_DIM, "clip_adapter": 2 * TINY_DIM * TINY_DIM // 4,
            "coop": 16 * TINY_DIM, "proker": 0, "clap": COLOURS * TINY_DIM}[mode]


@pytest.mark.parametrize("mode", BASELINE_MODES)
def test_each_baseline_writes_a_full_results_line(runs, mode):
    record = runs[0][mode]
    schema.check(record)
    assert record["mode"] == mode
    assert METHODS[mode].trains_on == "features"  # a baseline: fitted on the frozen base's features
    assert 0 <= record["test_acc"] <= 100
    assert math.isfinite(record["zero_shot_acc"])
    # The zero-shot accuracy of the module's first run is stored for the others (same base, test set, prompts).
    assert record["zero_shot_cached"] == (mode != BASELINE_MODES[0])
    assert record["train_seconds"] >= 0
    assert record["eval_seconds"] > 0
    assert record["peak_memory_mb"] > 0
    assert record["memory_kind"] == "cpu_rss"
    assert record["trainable_params"] == expected_trainable(mode, COLOURS * SHOTS)
    assert record["model_footprint_mb"] > 0
    assert not record["quantized"]
    [test_images] = record["test_images_per_process"]
    assert test_images > 0
    assert record["baseline_params"]["source"] == METHODS[mode].published["source"]
    # Every run of the module reads the same test embeddings (the shared evaluator's frozen-embedding store):
    # encoded by the first, cached for the rest.
    assert record["baseline_features"]["test"]["cached"] == (mode != BASELINE_MODES[0])
    assert runs[2][mode] == (test_images if mode == BASELINE_MODES[0] else 0)


def test_searched_and_scheduled_values_are_recorded(runs):
    records = runs[0]
    assert records["zs_ensemble_imagenet"]["baseline_params"]["template_set"] == "clip-imagenet-80"
    assert records["zs_ensemble_imagenet"]["baseline_params"]["templates"] == 80
    assert records["linear_probe"]["baseline_params"]["C"] > 0
    assert {"alpha", "beta"} <= records["tip_adapter"]["baseline_params"].keys()
    assert records["coop"]["baseline_params"]["epochs"] == 100
    assert records["coop"]["total_steps"] == 100
    assert records["clip_adapter"]["baseline_features"]["train-dassl-epochs"]["views"] == 200
    assert records["tip_adapter_f"]["baseline_features"]["train-tip-cache"]["cached"]  # Tip-Adapter's views
    assert records["proker"]["baseline_features"]["train-tip-cache"]["cached"]  # ProKeR reads the same views
    assert {"beta", "lambda"} <= records["proker"]["baseline_params"].keys()
    assert records["clap"]["total_steps"] == 300  # 300 epochs of one batch (8 images: fewer than 256)


def test_baselines_appear_in_the_paper_and_efficiency_tables(runs, tmp_path, capsys):
    assert summarize.main([str(runs[1]), "--tables", "paper,efficiency", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # One table of each kind per protocol card (published defaults, their own val search, per-dataset values).
    sections = ["## " + part for part in out.split("## ")[1:]]
    paper = "".join(part for part in sections if part.startswith("## Top-1 accuracy"))
    efficiency = "".join(part for part in sections if part.startswith("## Efficiency"))
    assert sum(part.startswith("## Efficiency") for part in sections) == len(
        [part for part in sections if part.startswith("## Top-1 accuracy")]) > 1
    for mode in BASELINE_MODES:
        assert f"| {mode} | {SHOTS} |" in paper
        assert f"| {SHOTS} | {mode} |" in efficiency


@pytest.mark.parametrize("flag, value", [("--lr", "0.1"), ("--n_iters", "3"), ("--r", "4"), ("--save_path", "out")])
def test_a_baseline_refuses_the_peft_flags_it_would_ignore(flag, value, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--mode", "coop", flag, value])
    error = capsys.readouterr().err
    assert f"{flag} {value}: --mode coop is a baseline" in error
    assert f"leave {flag} " in error  # and says what to do


@pytest.mark.parametrize("mode", [m for m in BASELINE_MODES if not METHODS[m].unseen_classes])
@pytest.mark.parametrize("flags, named", [(["--protocol", "base2new"], "--protocol base2new"),
                                          (["--eval_datasets", "dtd"], "--eval_datasets dtd")])
def test_a_baseline_fitted_to_its_classes_refuses_to_score_unseen_ones(mode, flags, named, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--mode", mode, *flags])
    assert f"{named}: --mode {mode} classifies only the classes it was fitted on" in capsys.readouterr().err


@pytest.mark.parametrize("mode", [m for m in BASELINE_MODES if METHODS[m].unseen_classes])
def test_a_baseline_that_classifies_through_prompts_takes_what_adapters_take(mode):
    args = parse_args(["--mode", mode, "--protocol", "base2new", "--eval_datasets", "dtd",
                       "--report_to", "tensorboard"])
    assert args.protocol == "base2new"
    assert args.eval_datasets == ["dtd"]
    assert args.report_to == ["tensorboard"]


def test_coop_runs_base_to_novel_and_reports_to_tensorboard(color_folder, tmp_path):
    record = main.main([*argv(color_folder, tmp_path, "coop", shots=1), "--protocol", "base2new",
                        "--report_to", "tensorboard", "--logging_dir", str(tmp_path / "runs")])
    schema.check(record)
    for name in ("base_acc", "new_acc", "hm_acc", "zero_shot_base_acc", "zero_shot_new_acc", "zero_shot_hm_acc"):
        assert 0 <= record[name] <= 100
    assert record["base_acc"] == record["test_acc"]
    assert record["baseline_params"]["epochs"] == 50  # CoOp's 1-shot schedule
    # Tracked like any method: its evaluations and results line in TensorBoard's folder.
    assert record["tracking_dir"] == str(tmp_path / "runs" / "coop-folder-base2new-1shot-seed1")
    assert list(Path(record["tracking_dir"]).glob("events.out.tfevents.*"))


def test_a_prompt_ensemble_is_evaluated_on_other_datasets_with_their_own_templates(tmp_path):
    import dataset_trees as trees

    root = tmp_path / "data"
    trees.build("dtd", root)
    trees.build("eurosat", root)
    record = main.main([*argv(root, tmp_path, "zs_ensemble_dataset", dataset="dtd"), "--eval_datasets", "eurosat"])
    schema.check(record)
    assert record["baseline_params"]["template_set"].startswith("clip-dtd-")  # DTD's own set
    target = record["eval_datasets"]["eurosat"]
    assert 0 <= target["test_acc"] <= 100
    assert 0 <= target["zero_shot_acc"] <= 100


@pytest.mark.skipif(not SYSTEM_FOLDER.exists(), reason="apt-get install dataset-fashion-mnist")
@pytest.mark.parametrize("mode", BASELINE_MODES)
def test_each_baseline_runs_on_fashion_mnist(mode, tmp_path_factory):
    tmp = tmp_path_factory.getbasetemp() / "fashion-baselines"  # one feature cache for the parameters
    tmp.mkdir(exist_ok=True)
    record = main.main(argv(tmp, tmp, mode, dataset="fashion_mnist"))
    assert record["test_images_per_process"] == [10_000]  # the full test set, through the shared evaluator
    if mode == "linear_probe":  # even on the random tiny model, a probe on frozen features beats chance
        assert record["test_acc"] > record["zero_shot_acc"] + 10
    if record["final_loss"] is not None:
        assert math.isfinite(record["final_loss"])


def test_a_baseline_runs_on_another_family(color_folder, tmp_path):
    record = main.main([*argv(color_folder, tmp_path, "linear_probe"), "--backbone", "tiny-siglip"])
    schema.check(record)
    assert record["family"] == "siglip"
    assert record["baseline_params"]["C"] > 0
    assert 0 <= record["test_acc"] <= 100


def test_coop_on_another_family_is_refused_before_its_weights_load(color_folder, tmp_path, monkeypatch):
    from qlora_clip.errors import UserError

    monkeypatch.setattr(main, "load_bundle", lambda *a, **k: pytest.fail("the weights were loaded"))
    with pytest.raises(UserError, match=r"--mode coop runs on CLIP checkpoints only \(its prompts are CLIP's token "
                                        r"layout.*--backbone tiny-siglip is a SigLIP checkpoint"):
        main.main([*argv(color_folder, tmp_path, "coop"), "--backbone", "tiny-siglip"])
