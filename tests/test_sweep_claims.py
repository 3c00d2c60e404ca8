"""Markers that keep two sweeps from running one run twice, and how a killed sweep's marker goes stale."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from run_utils import parse_args, run_spec
from sweeps import claims as claims_module
from sweeps.claims import LEASE_S, Claims, process_entry
from sweeps.plan import Run


def a_run(tmp_path: Path, seed: int = 1) -> Run:
    spec = run_spec(parse_args(["--mode", "qlora", "--dataset", "dtd", "--shots", "4", "--seed", str(seed)]))
    return Run(spec, ("python", "main.py"), tmp_path / "run.log")


def rewrite(claims: Claims, run: Run, **changes) -> None:
    """Edit a marker as another sweep (another host, a dead process) would have left it."""
    path = claims.path(run)
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def dead_process() -> tuple[int, float]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    entry = process_entry(child.pid)
    child.kill()
    child.wait()
    return entry


def test_a_held_run_cannot_be_taken_until_it_is_released(tmp_path):
    claims, run = Claims(tmp_path / "results.jsonl"), a_run(tmp_path)
    token, holder = claims.acquire(run)
    assert token
    assert holder is None
    assert claims.path(run).parent == tmp_path / "results.jsonl.claims"

    again, holder = claims.acquire(run)  # another sweep (here: the same live process) asks for it
    assert again is None
    assert holder.state == "running"
    assert holder.token == token
    assert claims.holder(run).token == token
    assert claims.acquire(a_run(tmp_path, seed=2))[0] is not None  # other runs stay free

    claims.release(run, "not-the-token")  # only the holder lets go
    assert claims.holder(run) is not None
    claims.release(run, token)
    assert claims.holder(run) is None
    assert claims.acquire(run)[0] is not None


def test_the_claim_of_a_killed_sweep_on_this_host_is_stale(tmp_path, caplog):
    claims, run = Claims(tmp_path / "results.jsonl"), a_run(tmp_path)
    claims.acquire(run)
    rewrite(claims, run, processes=[dead_process()])
    assert claims.holder(run) is None
    with caplog.at_level(logging.WARNING):
        assert claims.acquire(run)[0] is not None
    assert "is stale, its processes on this host are gone; the run is done again" in caplog.text


def test_a_reused_pid_does_not_keep_a_claim_alive(tmp_path):
    claims, run = Claims(tmp_path / "results.jsonl"), a_run(tmp_path)
    claims.acquire(run)
    pid, started = process_entry(os.getpid())
    rewrite(claims, run, processes=[[pid, started - 3600]])  # our pid, but an hour-older process held it
    assert claims.holder(run) is None


def test_a_claim_from_another_host_lives_while_its_heartbeat_is_fresh(tmp_path):
    claims, run = Claims(tmp_path / "results.jsonl"), a_run(tmp_path)
    claims.acquire(run)
    rewrite(claims, run, host="gpu-node-7", processes=[[1, 0.0]])
    assert claims.holder(run) is not None  # written just now
    old = time.time() - LEASE_S + 60
    os.utime(claims.path(run), (old, old))
    assert claims.holder(run) is not None
    renewed_after = time.time()
    claims.heartbeat(run)  # the holder's heartbeat renews the lease
    assert claims.path(run).stat().st_mtime >= renewed_after - 1  # 1 s: coarse file-system clocks
    old = time.time() - LEASE_S - 1
    os.utime(claims.path(run), (old, old))
    assert claims.holder(run) is None
    assert claims.acquire(run)[0] is not None


@pytest.fixture
def squeue(tmp_path, monkeypatch):
    """A fake `squeue` on PATH that lists the jobs written to the returned file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    listing = tmp_path / "squeue.txt"
    listing.write_text("")
    script = bin_dir / "squeue"
    script.write_text(f"#!/bin/sh\ncat {listing}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return listing


def test_a_run_queued_in_slurm_is_held_while_squeue_lists_its_job(tmp_path, squeue):
    claims, run = Claims(tmp_path / "results.jsonl"), a_run(tmp_path)
    token, _ = claims.acquire(run, state="queued")
    claims.queued_as(run, token, "4242_3")
    squeue.write_text("4242_1\n4242_3\n")
    old = time.time() - 10 * LEASE_S  # pending for hours: no heartbeat while queued, still held
    os.utime(claims.path(run), (old, old))
    rewrite(claims, run, host="login-2", processes=[[1, 0.0]])  # submitted from another machine
    os.utime(claims.path(run), (old, old))
    assert str(claims.holder(run)) == "queued in SLURM job 4242_3 from login-2"

    squeue.write_text("4242_1\n")  # cancelled, or the node died before the task began
    fresh = Claims(tmp_path / "results.jsonl")  # a later sweep asks squeue afresh
    assert fresh.holder(run) is None


def test_without_squeue_a_queued_run_counts_as_queued(tmp_path, monkeypatch):
    monkeypatch.setattr(claims_module.shutil, "which", lambda name: None)
    claims, run = Claims(tmp_path / "results.jsonl"), a_run(tmp_path)
    token, _ = claims.acquire(run, state="queued")
    claims.queued_as(run, token, "4242_3")
    rewrite(claims, run, host="login-2", processes=[[1, 0.0]])
    old = time.time() - 10 * LEASE_S
    os.utime(claims.path(run), (old, old))
    assert claims.holder(run) is not None


def test_the_slurm_task_takes_over_the_claim_its_sweep_queued(tmp_path):
    claims, run = Claims(tmp_path / "results.jsonl"), a_run(tmp_path)
    token, _ = claims.acquire(run, state="queued")
    # The task starts (on its node) before the sweep has written the job id: it takes the claim over ...
    assert claims.acquire(run, token=token, slurm_job="77_0") == (token, None)
    assert claims.holder(run).state == "running"
    claims.queued_as(run, token, "77_0")  # ... and the sweep's late note does not turn it back to queued
    assert claims.holder(run).state == "running"
    # A task whose claim was taken by someone else does not run the run.
    other, holder = claims.acquire(run, token="a-token-from-an-older-submission")
    assert other is None
    assert holder.token == token
