"""`python bench.py input` measures the real train and test loaders and prints one JSON line per setting."""
from __future__ import annotations

import json

import pytest

from bench import cli
from dataset_trees import build


def test_input_study_reports_images_per_second_for_each_pipeline_and_worker_count(capsys):
    cli.main(["input", "--backbone", "tiny", "--images", "8", "--size", "64x48", "--num_workers", "0", "1",
              "--batch_size", "4", "--repeats", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["pipeline"], r["num_workers"]) for r in lines] == [
        ("train", 0), ("test", 0), ("train", 1), ("test", 1)]
    assert all(r["images_per_s"] > 0 and r["images"] == 8 and r["nproc"] >= 1 for r in lines)
    assert all(r["source"] == "synthetic 64x48 JPEG q90" and r["image_size"] == 32 for r in lines)


def test_input_study_reads_a_datasets_test_split(tmp_path, capsys):
    build("dtd", tmp_path)
    cli.main(["input", "--backbone", "tiny", "--dataset", "dtd", "--root_path", str(tmp_path),
              "--images", "4", "--num_workers", "0", "--batch_size", "2", "--repeats", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["pipeline"] for r in lines] == ["train", "test"]
    assert all(r["source"] == "dtd test split" and r["images_per_s"] > 0 for r in lines)


@pytest.mark.parametrize("flag, value", [("--size", "64"), ("--num_workers", "-1"), ("--quality", "101"),
                                         ("--images", "0")])
def test_bad_input_flags_name_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit):
        cli.parse_input_args([flag, value])
    assert flag in capsys.readouterr().err


def test_a_missing_dataset_folder_is_an_error_naming_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["input", "--backbone", "tiny", "--dataset", "dtd", "--root_path", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "--dataset dtd" in capsys.readouterr().err
