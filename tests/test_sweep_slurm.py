"""The SLURM launcher without a cluster: submitit's local executor runs the array's tasks as local
processes (the same job function a SLURM node runs), and fake `sbatch` / `srun` / `squeue` commands
catch the script a real submission would hand to SLURM.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import submitit

from qlora_clip.run.results import read_results
from qlora_clip.backbones.tiny_clip import tiny_checkpoint_dir
from run_utils import parse_args, run_spec
from sweep import main as sweep_main
from sweeps import slurm as slurm_module
from sweeps.plan import SweepError
from sweeps.slurm import memory, minutes, sbatch_options


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> SimpleNamespace:
    """sbatch (answers job 4242, 4243, ...), srun, and squeue (lists what `queue` holds) on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls, queue = tmp_path / "sbatch_calls", tmp_path / "squeue.txt"
    queue.write_text("")
    scripts = {
        "sbatch": f'echo "$1" >> {calls}\necho "Submitted batch job $((4241 + $(wc -l < {calls})))"\n',
        "srun": "exit 0\n",
        "squeue": f"cat {queue}\n",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return SimpleNamespace(queue=queue, submissions=lambda: calls.read_text().splitlines() if calls.exists() else [])


def markers(results: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in Path(f"{results}.claims").glob("*.json")),
                  key=lambda m: m["run"])


def test_the_missing_runs_go_to_slurm_as_one_array_with_the_requested_resources_and_only_once(
        tmp_path, fake_slurm, capsys, caplog):
    caplog.set_level(logging.INFO, logger="sweep")
    results = tmp_path / "results.jsonl"
    sweep = ["--launcher", "slurm", "--datasets", "dtd", "--shots", "1", "--seeds", "1", "2", "--backbone", "tiny",
             "--results_file", str(results), "--log_dir", str(tmp_path / "logs"),
             "--partition", "gpu", "--time", "1:30:00", "--gpus_per_run", "2", "--cpus_per_run", "8", "--mem", "64G",
             "--array_parallelism", "1", "--sbatch", "--account=lab --qos high --exclusive"]

    assert sweep_main(sweep + ["--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "the 2 missing run(s) would be one job array" in listing
    assert listing.count("-m accelerate.commands.launch --multi_gpu --num_processes 2 ") == 2
    assert fake_slurm.submissions() == []
    assert not (tmp_path / "logs").exists()

    assert sweep_main(sweep) == 0
    [script_path] = fake_slurm.submissions()
    script = Path(script_path).read_text()
    sbatch = {line for line in script.splitlines() if line.startswith("#SBATCH")}
    for option in ("--partition=gpu", "--time=90", "--gpus-per-node=2", "--cpus-per-task=8", "--mem=64G",
                   "--array=0-1%1", "--account=lab", "--qos=high", "--exclusive", "--job-name=results-qlora-tiny",
                   f"--output={tmp_path}/logs/submitit/%A_%a/%A_%a_0_log.out"):
        assert f"#SBATCH {option}" in sbatch
    assert sbatch == {line for line in listing.splitlines() if line.startswith("#SBATCH")}  # what --dry-run showed
    assert f"export PYTHONPATH={slurm_module.MAIN.parent}" in script
    assert [(m["state"], m["slurm_job"]) for m in markers(results)] == [("queued", "4242_0"), ("queued", "4242_1")]

    # Started again while the array waits in the queue: nothing is submitted twice.
    fake_slurm.queue.write_text("4242_0\n4242_1\n")
    assert sweep_main(sweep) == 0
    assert len(fake_slurm.submissions()) == 1
    assert caplog.text.count("queued in SLURM job 4242_") == 2
    assert "nothing to submit" in caplog.text
    assert sweep_main(sweep + ["--dry-run"]) == 0
    assert capsys.readouterr().out.count("\nqueued  qlora dtd 1-shot") == 2

    # The tasks vanished without a results line (scancel, a dead node): the runs are submitted again.
    fake_slurm.queue.write_text("")
    assert sweep_main(sweep) == 0
    assert len(fake_slurm.submissions()) == 2
    assert [m["slurm_job"] for m in markers(results)] == ["4243_0", "4243_1"]


def test_a_small_sweep_runs_end_to_end_as_a_job_array_on_submitits_local_executor(
        tmp_path, color_folder, monkeypatch, caplog):
    def local_executor(folder: Path, params: dict) -> submitit.Executor:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=params["time"], setup=params["setup"])
        return executor

    monkeypatch.setattr(slurm_module, "make_executor", local_executor)
    monkeypatch.setattr(slurm_module, "POLL_S", 0.5)
    before = datetime.now().astimezone()
    tiny_checkpoint_dir()  # built once here: concurrent runs would each build it on first use
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results, logs = tmp_path / "results.jsonl", tmp_path / "logs"
    # Two "GPUs" per run: each task starts its run with accelerate launch, two CPU processes here.
    code = sweep_main(["--launcher", "slurm", "--time", "20", "--wait", "--gpus_per_run", "2",
                       "--datasets", "folder", "dtd", "--shots", "1", "--seeds", "1", "--backbone", "tiny",
                       "--root_path", str(color_folder), "--results_file", str(results), "--log_dir", str(logs),
                       "--extra_args", "--n_iters 1 --batch_size 4 --device cpu"])
    assert code == 1  # dtd is not under the root: that run fails, the other one is recorded
    records, problems = read_results(results)
    assert problems == []
    assert [(r["dataset"], r["seed"]) for r in records] == [("folder", 1)]
    record = records[0]
    assert record["host"] == socket.gethostname()
    assert record["processes"] == 2
    started, ended = datetime.fromisoformat(record["started_at"]), datetime.fromisoformat(record["finished_at"])
    assert before < started < ended < datetime.now().astimezone()  # aware times (naive ones do not compare)
    assert "1 of 2 runs failed" in caplog.text
    dtd_log = run_spec(parse_args(["--mode", "qlora", "--dataset", "dtd", "--shots", "1", "--backbone", "tiny",
                                   "--n_iters", "1", "--batch_size", "4", "--device", "cpu"])).log_file(logs)
    assert f"; log {dtd_log}" in caplog.text
    bad_log = dtd_log.read_text()
    assert "not found" in bad_log
    assert "accelerate.commands.launch" in bad_log
    assert "==> exit status 0" not in bad_log
    assert list((logs / "submitit").rglob("*_result.pkl"))  # submitit's own files stay under LOG_DIR
    assert markers(results) == []


def test_slurm_settings_are_checked_before_anything_is_submitted():
    assert minutes("240") == 240
    assert minutes("1:30:00") == 90
    assert minutes("1-00:00:30") == 1441
    for bad in ("4h", "1:30", "0"):
        with pytest.raises(SweepError, match="--time"):
            minutes(bad)
    with pytest.raises(SweepError, match="needs --time"):
        minutes(None)
    assert memory("64G") == "64G"
    assert memory(None) is None
    with pytest.raises(SweepError, match="--mem"):
        memory("64 GB")
    assert sbatch_options("--account=lab --qos high --exclusive --constraint 'a100|h100'") == {
        "account": "lab", "qos": "high", "exclusive": True, "constraint": "a100|h100"}
    with pytest.raises(SweepError, match="not a long sbatch option"):
        sbatch_options("-A lab")
    with pytest.raises(SweepError, match="use the sweep's --partition"):
        sbatch_options("--partition=gpu")


def test_each_launcher_refuses_the_other_ones_flags(tmp_path, capsys, monkeypatch):
    common = ["--datasets", "dtd", "--results_file", str(tmp_path / "r.jsonl"), "--dry-run"]
    with pytest.raises(SystemExit):
        sweep_main(common + ["--partition", "gpu"])
    assert "--partition: only for --launcher slurm" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep_main(common + ["--launcher", "slurm", "--time", "60", "--jobs", "4"])
    assert "--jobs: only for --launcher local" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep_main(common + ["--launcher", "slurm"])
    assert "--launcher slurm needs --time (TIME)" in capsys.readouterr().err
    # The environment variable of a flag of the other launcher is ignored (TIME is a common name).
    monkeypatch.setenv("TIME", "%e seconds")
    assert sweep_main(common) == 0
