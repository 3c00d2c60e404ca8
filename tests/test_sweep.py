"""The resumable sweep, through run_qlora.sh on the tiny CLIP, and what --dry-run shows.

The runs use the small generated colour folder (conftest.py) rather than Fashion-MNIST, whose
10,000 test images would make each run ten times slower without testing more of the sweep.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from qlora_clip.run.results import read_results
from qlora_clip.backbones.tiny_clip import tiny_checkpoint_dir
from run_utils import parse_args, run_spec
from sweep import main as sweep_main

REPO = Path(__file__).resolve().parents[1]


def sweep_env(tmp_path: Path, datasets: str, root: Path) -> dict:
    return {**os.environ, "DATASETS": datasets, "SHOTS": "1", "SEEDS": "1 2", "BACKBONE": "tiny",
            "ROOT_PATH": str(root), "RESULTS_FILE": str(tmp_path / "results.jsonl"),
            "LOG_DIR": str(tmp_path / "logs"), "EXTRA_ARGS": "--n_iters 1 --batch_size 4"}


def run_script(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "run_qlora.sh"), *args], env=env, cwd=Path(env["RESULTS_FILE"]).parent,
                          capture_output=True, text=True, timeout=600)


def log_of(tmp_path: Path, dataset: str, seed: int, root: Path) -> Path:
    """Where the sweep of sweep_env logs this run (its RunSpec decides)."""
    flags = ["--mode", "qlora", "--dataset", dataset, "--shots", "1", "--seed", str(seed), "--backbone", "tiny",
             "--root_path", str(root), "--n_iters", "1", "--batch_size", "4"]
    return run_spec(parse_args(flags)).log_file(tmp_path / "logs")


def finished(tmp_path: Path) -> list[tuple[str, int]]:
    records, problems = read_results(tmp_path / "results.jsonl")
    assert not problems
    return [(r["dataset"], r["seed"]) for r in records]


def launch_time(log: Path) -> datetime:
    """When the launcher last started the run: the timestamp of the last attempt header in its log."""
    headers = re.findall(r"^==> (\S+) .* attempt \d+ of \d+: ", log.read_text(), flags=re.MULTILINE)
    assert headers, f"no attempt header in {log}"
    return datetime.fromisoformat(headers[-1])


def wait_for(path: Path, child: subprocess.Popen, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert child.poll() is None, f"the sweep ended before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout}s"
        time.sleep(0.2)


def test_sweep_killed_then_restarted_runs_only_what_is_missing_and_survives_a_failing_run(tmp_path, color_folder):
    env = sweep_env(tmp_path, "folder", color_folder)

    # Killed (SIGTERM to the whole process group, as a closing terminal or a scheduler does) while
    # its second run is in progress.
    child = subprocess.Popen([str(REPO / "run_qlora.sh")], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(log_of(tmp_path, "folder", 2, color_folder), child)
        time.sleep(0.5)
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=60)
    assert child.returncode == 130
    assert finished(tmp_path) == [("folder", 1)]
    assert "==> interrupted" in log_of(tmp_path, "folder", 2, color_folder).read_text()

    # Restarted with a dataset that is not under ROOT_PATH first: its runs fail, are logged, and the
    # sweep goes on to the missing folder run without redoing the finished one (retries: test_sweep_local.py).
    env = sweep_env(tmp_path, "dtd folder", color_folder)
    done = run_script(env, "--jobs", "2")
    assert done.returncode == 1, done.stderr
    assert finished(tmp_path) == [("folder", 1), ("folder", 2)]
    assert "4 runs of qlora on tiny: 1 already in" in done.stderr
    assert "2 of 3 runs failed" in done.stderr
    assert f"dtd 1-shot seed 1: exit status 2; log {log_of(tmp_path, 'dtd', 1, color_folder)}" in done.stderr
    bad_log = log_of(tmp_path, "dtd", 1, color_folder).read_text()
    assert "--dataset dtd: " in bad_log
    assert "not found" in bad_log
    assert "==> exit status 2" in bad_log
    assert log_of(tmp_path, "folder", 1, color_folder).read_text().count("==> exit status 0") == 1
    assert "zero-shot accuracy" in log_of(tmp_path, "folder", 2, color_folder).read_text()
    assert f"start qlora folder 1-shot seed 2 -> {log_of(tmp_path, 'folder', 2, color_folder)}" in done.stderr

    # Dry run: lists what is finished and what is not, with the commands exactly as they ran, runs nothing.
    listing = run_script(env, "--dry-run")
    assert listing.returncode == 0, listing.stderr
    states = [line.split()[:5] for line in listing.stdout.splitlines() if line.startswith(("done", "todo"))]
    assert states == [["todo", "qlora", "dtd", "1-shot", "seed"]] * 2 + [
        ["done", "qlora", "folder", "1-shot", "seed"]] * 2
    commands = [line.strip() for line in listing.stdout.splitlines() if line.startswith("      ")]
    assert all(c.endswith("--n_iters 1 --batch_size 4") for c in commands)
    assert f"attempt 1 of 1: {commands[3]}\n" in log_of(tmp_path, "folder", 2, color_folder).read_text()
    assert finished(tmp_path) == [("folder", 1), ("folder", 2)]


def test_a_concurrent_sweep_killed_outright_resumes_without_duplicates(tmp_path, color_folder):
    """--jobs 2 on the CPU: two runs at once; SIGKILL leaves stale claims, which the next sweep redoes."""
    tiny_checkpoint_dir()  # built once here: concurrent runs would each build it on first use
    env = sweep_env(tmp_path, "folder", color_folder)
    child = subprocess.Popen([str(REPO / "run_qlora.sh"), "--jobs", "2"], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(log_of(tmp_path, "folder", 1, color_folder), child)
        wait_for(log_of(tmp_path, "folder", 2, color_folder), child)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # sweep and runs alike: nothing gets to clean up
        child.wait(timeout=60)
    assert not (tmp_path / "results.jsonl").exists()  # killed while both runs were starting
    claims = list((tmp_path / "results.jsonl.claims").glob("*.json"))
    assert len(claims) == 2

    done = run_script(env, "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("its processes on this host are gone; the run is done again") == 2
    records, problems = read_results(tmp_path / "results.jsonl")
    assert problems == []
    assert sorted(r["seed"] for r in records) == [1, 2]  # both lines, whole, once each
    # The two runs overlapped: each was launched before the other had finished. The launch time is the
    # launcher's own (the header it writes to the run's log just before it starts the process), not
    # main.py's started_at, which comes after the imports and can fall after a short run's end on a busy
    # machine. With two slots, the launcher starts the second run within moments of the first.
    launched = {seed: launch_time(log_of(tmp_path, "folder", seed, color_folder)) for seed in (1, 2)}
    finished_at = {r["seed"]: datetime.fromisoformat(r["finished_at"]) for r in records}
    assert launched[1] < finished_at[2]
    assert launched[2] < finished_at[1]
    assert list((tmp_path / "results.jsonl.claims").glob("*.json")) == []
    assert run_script(env, "--jobs", "2").stderr.count("2 already in") == 1  # and a third start runs nothing


def test_dry_run_lists_the_paper_protocol_by_default(tmp_path, capsys, monkeypatch):
    for name in ("DATASETS", "SHOTS", "SEEDS", "BACKBONE", "ROOT_PATH", "SAVE_PATH", "EXTRA_ARGS"):
        monkeypatch.delenv(name, raising=False)
    results = tmp_path / "results.jsonl"
    assert sweep_main(["--mode", "lora", "--results_file", str(results), "--log_dir", str(tmp_path), "--dry-run"]) == 0
    listing = [line for line in capsys.readouterr().out.splitlines() if line.startswith("todo")]
    assert len(listing) == 11 * 5 * 3
    assert listing[0].split()[:6] == ["todo", "lora", "imagenet", "1-shot", "seed", "1"]
    assert "ViT-B-16/ucf101/16shots/seed3/lora.log" in listing[-1]
    assert not results.exists()


def test_a_finished_run_with_other_training_flags_is_not_taken_for_this_one(tmp_path, capsys, caplog):
    """Skipping compares the run's flags, so n_iters 1 smoke runs never stand in for real runs."""
    from qlora_clip.run.results import append_jsonl
    from run_utils import build_parser

    results = tmp_path / "results.jsonl"
    flags = ["--mode", "qlora", "--dataset", "dtd", "--shots", "4", "--seed", "1", "--backbone", "tiny"]
    for extra in (["--n_iters", "1"], ["--root_path", "/elsewhere"]):
        config = vars(build_parser().parse_args(flags + extra))
        append_jsonl(results, {"mode": "qlora", "dataset": "dtd", "shots": 4, "seed": 1, "backbone": "tiny",
                               "config": config, "test_acc": 50.0})
    with open(results, "a") as f:
        f.write('{"mode": "qlora", "dataset": "dtd", "shots": 4,\n')  # a line torn by a crash
    common = ["--mode", "qlora", "--datasets", "dtd", "--shots", "4", "--seeds", "1", "--backbone", "tiny",
              "--results_file", str(results), "--log_dir", str(tmp_path), "--dry-run"]

    assert sweep_main(common + ["--extra_args", "--n_iters 2"]) == 0
    assert capsys.readouterr().out.startswith("todo")
    # --root_path is bookkeeping: the run recorded under /elsewhere (default n_iters) is this run.
    assert sweep_main(common + ["--root_path", "DATA"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("done")
    assert f"{results}:3: not valid JSON" in caplog.text


def test_unknown_datasets_stop_the_sweep_before_any_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sweep_main(["--datasets", "dtd", "no_such_dataset", "--results_file", str(tmp_path / "r.jsonl"), "--dry-run"])
    assert "--datasets (DATASETS): unknown dataset(s) no_such_dataset" in capsys.readouterr().err


def test_extra_args_may_not_override_what_the_sweep_sets(tmp_path, capsys):
    code = sweep_main(["--datasets", "dtd", "--results_file", str(tmp_path / "r.jsonl"),
                       "--extra_args", "--shots 8", "--dry-run"])
    assert code == 2
    assert "sets --shots" in capsys.readouterr().err


def test_dry_run_shows_the_exact_commands_and_runs_on_several_gpus_go_through_accelerate(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="sweep")
    assert sweep_main(["--datasets", "dtd", "--shots", "1", "--seeds", "1", "--backbone", "tiny",
                       "--results_file", str(tmp_path / "r.jsonl"), "--log_dir", str(tmp_path),
                       "--devices", "0,1,2,3", "--gpus_per_run", "2", "--dry-run"]) == 0
    assert "2 run(s) at once, CUDA_VISIBLE_DEVICES 0,1 | 2,3" in caplog.text
    command = shlex.split(capsys.readouterr().out.splitlines()[-1])
    assert command[:16] == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                            "--main_process_port", "0", str(REPO / "main.py"), "--mode"]


def test_runs_get_the_sweeps_tracking_group(tmp_path, capsys):
    common = ["--datasets", "dtd", "--shots", "1", "--seeds", "1", "--backbone", "tiny",
              "--results_file", str(tmp_path / "r.jsonl"), "--log_dir", str(tmp_path), "--dry-run"]
    assert sweep_main(common) == 0
    assert capsys.readouterr().out.count("--run_group r-qlora-tiny") == 1
    assert sweep_main(common + ["--group", "ablation-3"]) == 0
    assert "--run_group ablation-3" in capsys.readouterr().out
    assert sweep_main(common + ["--extra_args", "--run_group other"]) == 2
    assert "sets --run_group" in capsys.readouterr().err
