"""qlora_clip/run/record.py: the end of a run never loses its results line. Every failure after training (an
export, including a --merge_export folder another run filled meanwhile; a model card; an adapter save; the report
to a tracking backend) leaves the line in --results_file and then stops with exit 2 and the message; and
--eval_only runs with every combination of the output flags."""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

import main
from qlora_clip.errors import UserError
from qlora_clip.methods.peft_tuners import PeftAdapter
from qlora_clip.run import record as run_record
from qlora_clip.run import saved_adapter
from qlora_clip.run.tracking import TensorBoardBackend


def argv(color_folder: Path, folder: Path, *extra: str) -> list[str]:
    return ["--backbone", "tiny", "--dataset", "folder", "--root_path", str(color_folder), "--shots", "1",
            "--n_iters", "1", "--batch_size", "4", "--results_file", str(folder / "results.jsonl"),
            "--logging_dir", str(folder / "runs"), *extra]


def lines(folder: Path) -> list[dict]:
    path = folder / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- failures after training -------------------------------------------------------------------------

def fill_during_training(monkeypatch, target: Path) -> None:
    """Another run exports into `target` while this one trains (after the start-of-run check passed)."""
    train = main.train

    def train_then_fill(*args, **kwargs):
        result = train(*args, **kwargs)
        target.mkdir(parents=True, exist_ok=True)
        (target / "config.json").write_text("{}")
        return result

    monkeypatch.setattr(main, "train", train_then_fill)


def fail(exception: Exception):
    def failing(*args, **kwargs):
        raise exception
    return failing


FAILURES = {
    "export folder filled meanwhile": (
        lambda monkeypatch, folder: fill_during_training(monkeypatch, folder / "merged"),
        ["--merge_export", "{folder}/merged"], "merge_export", r"--merge_export .*merged is not empty"),
    "export crashes": (
        lambda monkeypatch, folder: monkeypatch.setattr(run_record, "export_merged", fail(TypeError("a bug"))),
        ["--merge_export", "{folder}/merged"], "merge_export", r"--merge_export: could not write .*merged "
                                                                r"\(TypeError: a bug\)"),
    "model card": (
        lambda monkeypatch, folder: monkeypatch.setattr(saved_adapter, "write_model_card", fail(ValueError("card"))),
        ["--save_path", "{folder}/adapters"], "adapter_dir", r"--save_path: could not save the adapter to .* "
                                                             r"\(ValueError: card\)"),
    "adapter save": (
        lambda monkeypatch, folder: monkeypatch.setattr(PeftAdapter, "save", fail(RuntimeError("disk"))),
        ["--save_path", "{folder}/adapters"], "adapter_dir", r"\(RuntimeError: disk\)"),
    "tracking": (
        lambda monkeypatch, folder: monkeypatch.setattr(TensorBoardBackend, "log_results", fail(OSError("gone"))),
        ["--report_to", "tensorboard"], None, r"--report_to tensorboard: could not report the results "
                                              r"\(OSError: gone\)"),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failure_after_training_keeps_the_line_then_stops_with_its_message(failure, color_folder, tmp_path,
                                                                            monkeypatch):
    arrange, flags, field, says = FAILURES[failure]
    arrange(monkeypatch, tmp_path)
    flags = [flag.format(folder=tmp_path) for flag in flags]
    with pytest.raises(UserError, match=says) as raised:
        main.main(argv(color_folder, tmp_path, *flags))
    assert f"the results line is in {tmp_path / 'results.jsonl'}" in str(raised.value)
    [line] = lines(tmp_path)
    assert line["total_steps"] == 1  # the run trained
    if field is not None:
        assert line[field] is None  # the output that failed is not claimed


def test_the_failure_is_exit_2_with_the_message_and_no_traceback(color_folder, tmp_path, monkeypatch, capsys):
    fill_during_training(monkeypatch, tmp_path / "merged")
    monkeypatch.setattr(sys, "argv", ["main.py", *argv(color_folder, tmp_path, "--merge_export",
                                                       str(tmp_path / "merged"))])
    assert main.cli() == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: --merge_export" in err
    assert len(lines(tmp_path)) == 1


# --- --eval_only with every combination of the output flags ---------------------------------------------

@pytest.fixture(scope="module")
def trained(color_folder, tmp_path_factory) -> tuple[Path, dict]:
    """An adapter saved by a training run: (the folder it was saved under, the run's line)."""
    folder = tmp_path_factory.mktemp("trained")
    line = main.main(argv(color_folder, folder, "--save_path", str(folder / "adapters")))
    return folder / "adapters", line


OUTPUTS = list(itertools.product((False, True), ("none", "tensorboard"), ("0", "1")))


@pytest.mark.parametrize("merge, report_to, checkpoint_every", OUTPUTS)
def test_eval_only_takes_every_combination_of_the_output_flags(merge, report_to, checkpoint_every, trained,
                                                               color_folder, tmp_path):
    adapters, trained_line = trained
    flags = ["--eval_only", "--save_path", str(adapters), "--report_to", report_to,
             "--checkpoint_every", checkpoint_every, "--checkpoint_dir", str(tmp_path / "states")]
    flags += ["--merge_export", str(tmp_path / "merged")] if merge else []
    record = main.main(argv(color_folder, tmp_path, *flags))
    assert lines(tmp_path) == [json.loads(json.dumps(record))]
    assert record["test_acc"] == trained_line["test_acc"]
    assert record["total_steps"] == 0
    assert record["peak_memory_mb"] is None
    assert record["adapter_dir"] is None  # read, not written
    assert not (tmp_path / "states").exists()  # nothing trains, so no training state is written
    if merge:
        assert record["merge_export"] == str(tmp_path / "merged")
        assert "not measured (no training: --eval_only)" in (tmp_path / "merged" / "README.md").read_text()
    else:
        assert record["merge_export"] is None
    assert (record["tracking_dir"] is not None) == (report_to == "tensorboard")
    if report_to == "tensorboard":
        assert any(Path(record["tracking_dir"]).glob("events.out.tfevents.*"))
