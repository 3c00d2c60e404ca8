"""qlora_clip/results.py reading a results file: which lines are records and what a skipped line says."""
from __future__ import annotations

import json

import pytest

from qlora_clip.run.results import read_results

GOOD = {"mode": "lora", "dataset": "dtd", "shots": 4, "seed": 1, "backbone": "ViT-B/16", "config": {},
        "zero_shot_acc": 40.0, "test_acc": 60.5, "train_seconds": 12, "base_acc": None,
        "eval_datasets": {"caltech101": {"test_acc": 90.0, "zero_shot_acc": None}}}


def with_field(name: str, raw: str) -> str:
    """GOOD as one JSON line, with `name` spelled `raw` (raw JSON text, so NaN stays NaN)."""
    return json.dumps({**GOOD, name: "@@"}).replace('"@@"', raw)


@pytest.mark.parametrize("line, message", [
    (with_field("shots", '"4"'), "'shots' is \"4\", not an integer"),
    (with_field("shots", "4.0"), "'shots' is 4.0, not an integer"),
    (with_field("seed", "true"), "'seed' is true, not an integer"),
    (with_field("mode", "3"), "'mode' is 3, not a string"),
    (with_field("backbone", "null"), "'backbone' is null, not a string"),
    (with_field("test_acc", "NaN"), "'test_acc' is NaN, not a finite number or null"),
    (with_field("zero_shot_acc", "-Infinity"), "'zero_shot_acc' is -Infinity, not a finite number or null"),
    (with_field("test_acc", '"91.0"'), "'test_acc' is \"91.0\", not a finite number or null"),
    (with_field("peak_memory_mb", "[1, 2]"), "'peak_memory_mb' is [1, 2], not a finite number or null"),
    (with_field("eval_datasets", '{"dtd": {"test_acc": NaN}}'),
     "'eval_datasets.dtd.test_acc' is NaN, not a finite number or null"),
    (with_field("eval_datasets", '{"dtd": 5}'), "'eval_datasets' is not an object of objects"),
    (with_field("config", '"x"'), "'config' is not an object"),
])
def test_a_line_with_a_field_of_the_wrong_type_is_reported_and_the_others_kept(tmp_path, line, message):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n" + json.dumps({**GOOD, "seed": 2}) + "\n")
    records, problems = read_results(path)
    assert [r["seed"] for r in records] == [1, 2]
    assert [str(p) for p in problems] == [f"{path}:2: {message}; line skipped"]


def test_nulls_integers_and_lines_without_the_optional_numbers_are_records(tmp_path):
    path = tmp_path / "results.jsonl"
    minimal = {k: GOOD[k] for k in ("mode", "dataset", "shots", "seed", "backbone")}
    lines = [GOOD, {**GOOD, "test_acc": None, "zero_shot_acc": 41, "eval_datasets": None}, minimal]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    records, problems = read_results(path)
    assert problems == []
    assert records == lines
