"""main.py end to end: the results line a run appends (its fields, counts and the few-shot draw it names)."""
from __future__ import annotations

import json

import main


def test_results_line_has_the_documented_schema(tiny_argv, tmp_path):
    record = main.main(tiny_argv("--mode", "qlora"))
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == json.loads(json.dumps(record))
    for key in ("mode", "dataset", "shots", "seed", "backbone", "config", "zero_shot_acc", "test_acc",
                "train_seconds", "peak_memory_mb", "memory_kind", "model_footprint_mb", "trainable_params",
                "total_steps", "device", "versions"):
        assert key in record, key
    assert record["memory_kind"] == "cpu_rss"
    assert record["device"] == "cpu"
    assert record["total_steps"] == 4
    assert record["config"]["mode"] == "qlora"
    assert 0 <= record["test_acc"] <= 100
    assert record["peak_memory_mb"] > 0
    assert set(record["versions"]) >= {"torch", "transformers", "peft", "bitsandbytes"}
    main.main(tiny_argv("--mode", "lora"))
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2  # appended, not rewritten


def test_results_line_counts_the_images_trained_on(tiny_argv):
    # 4 classes x 3 shots = 12 images at batch 8: steps of 8, 4, 8 (CLIP-LoRA's DataLoader, drop_last=False)
    record = main.main(tiny_argv("--shots", "3", "--n_iters", "1"))
    assert record["total_steps"] == 3
    assert record["train_images_seen"] == 20
    assert record["shots_drawn"] == 3  # every class had 3 distinct images to draw


def test_shots_beyond_the_data_record_what_was_drawn(tiny_argv):
    # The colour folder's classes have 8 train images each: 10 shots are drawn with repetition.
    record = main.main(tiny_argv("--shots", "10", "--n_iters", "0"))
    assert record["shots"] == 10
    train = json.loads(open(record["subset_file"]).read())["train"]
    assert len(train) == 4 * 10
    distinct = [len({source for source, label in train if label == c}) for c in range(4)]
    assert record["shots_drawn"] == min(distinct)
    assert record["shots_drawn"] <= 8


def test_zero_iterations_only_evaluates(tiny_argv):
    record = main.main(tiny_argv("--n_iters", "0"))
    assert record["total_steps"] == 0
    assert record["test_acc"] == record["zero_shot_acc"]


def test_seed_and_shots_change_the_few_shot_draw(tiny_argv, tmp_path):
    subsets = {}
    for seed, shots in ((1, 4), (2, 4), (1, 2)):
        record = main.main(tiny_argv("--n_iters", "0", "--seed", str(seed), "--shots", str(shots)))
        subsets[seed, shots] = json.loads(open(record["subset_file"]).read())["train"]
    assert len(subsets[1, 4]) == 16
    assert len(subsets[1, 2]) == 8
    assert subsets[1, 4] != subsets[2, 4]
