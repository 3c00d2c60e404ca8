"""Experiment tracking: the flags, the log folders, TensorBoard read back, W&B offline (when installed)."""
from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import main
from qlora_clip.errors import UserError
from qlora_clip.run.results import comparable_config
from qlora_clip.run.tracking import TensorBoardBackend, Tracker, TrackingConfig, WandbBackend, log_folder, start_tracking
from run_utils import flag_defaults, parse_args, run_spec
from trainer import StepRecord


def events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def text(accumulator: EventAccumulator, tag: str) -> str:
    return accumulator.Tensors(f"{tag}/text_summary")[0].tensor_proto.string_val[0].decode()


# --- flags ----------------------------------------------------------------------------------------

def test_tracking_is_off_by_default_and_runs_are_named_by_method_dataset_shots_seed():
    args = parse_args(["--mode", "qlora", "--dataset", "caltech101", "--shots", "4", "--seed", "1"])
    assert args.report_to == ["none"]
    assert args.run_group is None
    assert args.logging_dir == "runs"
    assert run_spec(args).name == "qlora-caltech101-4shot-seed1"
    assert run_spec(parse_args(["--run_name", "mine"])).tracking.run_name == "mine"
    config = run_spec(parse_args(["--report_to", "tensorboard", "--run_group", "sweep1", "--resume"])).tracking
    assert config.report_to == ("tensorboard",)
    assert config.run_group == "sweep1"
    assert config.resume
    assert run_spec(parse_args([])).tracking.backends == ()


@pytest.mark.parametrize("argv, message", [
    (["--report_to", "none", "tensorboard"], "'none' cannot go with a backend"),
    (["--report_to", "tensorboard", "tensorboard"], "--report_to lists a backend twice"),
    (["--report_to", "mlflow"], "--report_to"),
    (["--run_name", "a/b"], "--run_name 'a/b'"),
    (["--run_group", ".."], "--run_group '..'"),
])
def test_bad_tracking_flags_fail_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_missing_wandb_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed, whether it is or not
    with pytest.raises(SystemExit):
        parse_args(["--report_to", "wandb"])
    assert "pip install wandb" in capsys.readouterr().err
    config = TrackingConfig(report_to=("wandb",), logging_dir=tmp_path, run_name="r")
    with pytest.raises(UserError, match=r"pip install wandb"):
        WandbBackend(tmp_path / "r", config)


def test_tracking_flags_do_not_make_a_different_run():
    plain = comparable_config(vars(parse_args([])), flag_defaults())
    tracked = comparable_config(vars(parse_args(["--report_to", "tensorboard", "--run_name", "x",
                                                 "--run_group", "g", "--logging_dir", "elsewhere"])), flag_defaults())
    assert plain == tracked


# --- log folders ----------------------------------------------------------------------------------

def test_log_folder_is_group_then_name_and_never_mixes_two_runs(tmp_path):
    config = TrackingConfig(report_to=("tensorboard",), logging_dir=tmp_path, run_name="lora-dtd-1shot-seed1",
                            run_group="sweep")
    first = log_folder(config)
    assert first == tmp_path / "sweep" / "lora-dtd-1shot-seed1"
    first.mkdir(parents=True)
    second = log_folder(config)
    assert second == tmp_path / "sweep" / "lora-dtd-1shot-seed1-2"
    second.mkdir()
    resumed = TrackingConfig(**{**config.__dict__, "resume": True})
    assert log_folder(resumed) == second  # a resumed run continues where it was interrupted
    ungrouped = TrackingConfig(report_to=("tensorboard",), logging_dir=tmp_path, run_name="x")
    assert log_folder(ungrouped) == tmp_path / "x"


def test_a_resumed_run_replaces_the_interrupted_runs_later_steps_in_its_folder(tmp_path):
    config = TrackingConfig(report_to=("tensorboard",), logging_dir=tmp_path, run_name="r", resume=True)
    interrupted = start_tracking(config, {})
    for step in range(1, 6):  # killed after step 5, last checkpoint at step 3
        interrupted.on_step(StepRecord(step, 8, loss=1.0, lr=1e-3, seconds=0.1, images=8, grad_scale=None))
    interrupted.close()
    resumed = start_tracking(config, {})
    assert resumed.folder == interrupted.folder == tmp_path / "r"
    resumed.log_eval({"zero_shot_accuracy": 25.0}, step=0)
    for step in range(4, 9):
        resumed.on_step(StepRecord(step, 8, loss=0.5, lr=1e-3, seconds=0.1, images=8, grad_scale=None))
    resumed.close()
    assert scalars(events(tmp_path / "r"), "train/loss") == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 0.5), (5, 0.5),
                                                             (6, 0.5), (7, 0.5), (8, 0.5)]


def test_no_backend_or_another_process_writes_nothing(tmp_path):
    for report_to, main_process in (((), True), (("tensorboard",), False)):
        config = TrackingConfig(report_to=report_to, logging_dir=tmp_path / "runs", run_name="r", run_group="g")
        tracker = start_tracking(config, {"a": 1}, main_process=main_process)
        tracker.on_step(StepRecord(1, 2, 0.5, 1e-3, 0.1, 8, None))
        tracker.log_eval({"accuracy": 50.0}, step=1)
        tracker.finish({"test_acc": 50.0})
        assert tracker.fields() == {"run_name": "r", "run_group": "g", "tracking_dir": None}
    assert not (tmp_path / "runs").exists()


def test_fp16_runs_log_the_gradient_scale(tmp_path):
    backend = TensorBoardBackend(tmp_path)
    tracker = Tracker("r", folder=tmp_path, backends=[backend])
    tracker.on_step(StepRecord(step=1, total_steps=2, loss=0.7, lr=1e-3, seconds=0.5, images=32, grad_scale=65536.0))
    tracker.on_step(StepRecord(step=2, total_steps=2, loss=0.6, lr=5e-4, seconds=0.25, images=32, grad_scale=32768.0))
    tracker.close()
    logged = events(tmp_path)
    assert scalars(logged, "train/grad_scale") == [(1, 65536.0), (2, 32768.0)]
    assert scalars(logged, "train/samples_per_second") == [(1, 64.0), (2, 128.0)]


# --- TensorBoard, end to end ----------------------------------------------------------------------

def test_tensorboard_gets_every_step_the_evaluations_config_and_results(tiny_argv, tmp_path):
    logs = tmp_path / "runs"
    record = main.main(tiny_argv("--report_to", "tensorboard", "--logging_dir", str(logs), "--run_group", "sweep1",
                                 "--n_iters", "2", "--shots", "2"))
    folder = logs / "sweep1" / "lora-folder-2shot-seed1"
    assert record["run_name"] == "lora-folder-2shot-seed1"
    assert record["run_group"] == "sweep1"
    assert record["tracking_dir"] == str(folder)
    line = json.loads((tmp_path / "results.jsonl").read_text())
    assert line["tracking_dir"] == str(folder)
    assert line["run_name"] == record["run_name"]

    logged = events(folder)
    steps = list(range(1, record["total_steps"] + 1))
    loss = scalars(logged, "train/loss")
    assert [step for step, _ in loss] == steps == [1, 2, 3, 4]
    assert loss[-1][1] == pytest.approx(record["final_loss"])
    lr = scalars(logged, "train/learning_rate")
    assert lr[0] == (1, pytest.approx(2e-4))
    assert lr[-1][1] < lr[0][1]  # the cosine schedule
    assert [step for step, _ in scalars(logged, "train/step_seconds")] == steps
    assert all(value > 0 for _, value in scalars(logged, "train/samples_per_second"))
    assert "train/grad_scale" not in logged.Tags()["scalars"]  # fp32: no gradient scaler
    assert scalars(logged, "eval/zero_shot_accuracy") == [(0, pytest.approx(record["zero_shot_acc"]))]
    assert scalars(logged, "eval/accuracy") == [(4, pytest.approx(record["test_acc"]))]

    config = json.loads(text(logged, "config"))
    assert config["report_to"] == ["tensorboard"]
    assert config["shots"] == 2
    assert json.loads(text(logged, "results"))["test_acc"] == record["test_acc"]
    hparams = logged.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["lr"].number_value == pytest.approx(2e-4)
    assert start.session_start_info.hparams["params"].string_value == "q k v"

    # The same run again gets its own folder instead of mixing its curves into the first's; in
    # fp16 (CPU autocast here) every step also reports the gradient scaler's scale.
    again = main.main(tiny_argv("--report_to", "tensorboard", "--logging_dir", str(logs), "--run_group", "sweep1",
                                "--n_iters", "1", "--shots", "2", "--compute_dtype", "fp16"))
    assert again["tracking_dir"] == str(folder) + "-2"
    scales = scalars(events(Path(again["tracking_dir"])), "train/grad_scale")
    assert [step for step, _ in scales] == [1, 2]
    # GradScaler's scale after the step: 65536 to start, halved at every overflowing step.
    assert all(math.log2(value).is_integer() and value <= 65536.0 for _, value in scales)


# --- W&B, offline ---------------------------------------------------------------------------------

def wandb_records(run_file: Path):
    """The records of a W&B run file: LevelDB's log format (32 KiB blocks of checksummed chunks)
    after a 7-byte W&B header; each record is a protobuf `Record`."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if position + 7 + length > len(data):  # still being written
            return
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def finished_wandb_run(run_file: Path, timeout: float = 120.0) -> list:
    """The run file's records once they end with the run's exit record: wandb.finish() returns
    before W&B's service process has written everything."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(wandb_records(run_file))
        if (records and records[-1].WhichOneof("record_type") == "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def test_wandb_offline_run_has_the_steps_group_config_and_summary(tiny_argv, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is optional and not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logs = tmp_path / "runs"
    record = main.main(tiny_argv("--report_to", "wandb", "tensorboard", "--logging_dir", str(logs),
                                 "--run_group", "sweep1", "--n_iters", "1", "--shots", "2"))
    folder = Path(record["tracking_dir"])
    assert folder == logs / "sweep1" / "lora-folder-2shot-seed1"
    assert scalars(events(folder), "eval/accuracy") == [(2, pytest.approx(record["test_acc"]))]
    run_files = list(folder.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1

    history, summary, config, run = [], {}, {}, None
    for item in finished_wandb_run(run_files[0]):
        kind = item.WhichOneof("record_type")
        if kind == "run":
            run = item.run
        elif kind == "history":
            history.append({entry.key or "/".join(entry.nested_key): json.loads(entry.value_json)
                            for entry in item.history.item})
        elif kind == "config":
            config.update({entry.key: json.loads(entry.value_json) for entry in item.config.update})
        elif kind == "summary":
            summary.update({entry.key or "/".join(entry.nested_key): json.loads(entry.value_json)
                            for entry in item.summary.update})
    assert run.display_name == "lora-folder-2shot-seed1"
    assert run.run_group == "sweep1"
    config.update({entry.key: json.loads(entry.value_json) for entry in run.config.update})
    assert config["report_to"] == ["wandb", "tensorboard"]
    assert config["shots"] == 2
    assert [row["_step"] for row in history if "train/loss" in row] == [1, 2]
    assert history[-1]["train/loss"] == pytest.approx(record["final_loss"])
    assert history[-1]["eval/accuracy"] == pytest.approx(record["test_acc"])
    assert any(row.get("eval/zero_shot_accuracy") == pytest.approx(record["zero_shot_acc"]) for row in history)
    assert summary["test_acc"] == pytest.approx(record["test_acc"])
    assert summary["run_name"] == "lora-folder-2shot-seed1"
