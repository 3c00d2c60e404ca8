"""One run from its claim to its results line, retried when it fails: the job both launchers execute.

The local launcher calls `run_task` in a worker thread per GPU slot; the SLURM launcher submits it as
the function of each array task. Either way the run's output (all attempts) is appended to its log.
"""
from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable

from qlora_clip.run.results import recorded_configs, timestamp
from sweeps.claims import HEARTBEAT_S, Claims, process_entry
from sweeps.plan import Run

log = logging.getLogger("sweep")

DONE = "done"
FAILED = "failed"
FINISHED_ELSEWHERE = "finished elsewhere"  # another sweep wrote its line meanwhile
HELD_ELSEWHERE = "held elsewhere"  # another sweep, or SLURM job, is running it or has it queued
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Task:
    run: Run
    results_file: str
    retries: int = 0
    token: str | None = None  # the claim a sweep made when it queued the run in SLURM


@dataclass(frozen=True)
class Outcome:
    run: Run
    state: str
    seconds: float = 0.0
    attempts: int = 0
    detail: str = ""  # why it failed, or who holds it


def is_finished(run: Run, results_file: str) -> bool:
    return run.config in recorded_configs(results_file, run.spec.defaults)[0]


def run_task(task: Task, devices: tuple[str, ...] | None = None, stop: threading.Event | None = None,
             on_start: Callable[[Run], None] | None = None) -> Outcome:
    """Claim the run, run it (up to 1 + retries attempts) unless it is finished, release the claim.

    `devices`: the GPUs for CUDA_VISIBLE_DEVICES (empty: none, the CPU); None keeps the environment's
    (a SLURM task's own GPUs). `stop`: set by the local launcher on Ctrl-C or SIGTERM.
    """
    run = task.run
    claims = Claims(task.results_file)
    token, holder = claims.acquire(run, token=task.token, slurm_job=_slurm_job())
    if token is None:
        return Outcome(run, HELD_ELSEWHERE, detail=str(holder))
    try:
        # Read after claiming: a sweep that finished this run wrote its line before it let the claim go.
        if is_finished(run, task.results_file):
            return Outcome(run, FINISHED_ELSEWHERE)
        if on_start:
            on_start(run)
        started = time.monotonic()
        attempts = task.retries + 1
        for attempt in range(1, attempts + 1):
            if stop is not None and stop.is_set():  # the sweep is stopping: no new attempt
                return Outcome(run, INTERRUPTED, time.monotonic() - started, attempt - 1)
            status = _attempt(run, claims, token, devices, stop, f"attempt {attempt} of {attempts}")
            if status is None:
                return Outcome(run, INTERRUPTED, time.monotonic() - started, attempt)
            if status == 0 and is_finished(run, task.results_file):
                return Outcome(run, DONE, time.monotonic() - started, attempt)
            detail = (f"exit status {status}" if status else
                      f"main.py exited 0 but {task.results_file} has no line for it")
            if attempt < attempts:
                log.warning("%s failed (%s, attempt %d of %d); trying again; see %s",
                            run, detail, attempt, attempts, run.log_file)
        return Outcome(run, FAILED, time.monotonic() - started, attempts, detail)
    finally:
        claims.release(run, token)


def _attempt(run: Run, claims: Claims, token: str, devices: tuple[str, ...] | None,
             stop: threading.Event | None, label: str) -> int | None:
    """Run main.py once with its output appended to the run's log; its exit status, None if interrupted."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    run.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(run.log_file, "ab") as out:  # appended: the log of a failed attempt survives its retry
        gpus = shlex.quote(env["CUDA_VISIBLE_DEVICES"]) if "CUDA_VISIBLE_DEVICES" in env else "(unset)"
        out.write(f"==> {timestamp()} {socket.gethostname()} CUDA_VISIBLE_DEVICES={gpus} {label}: "
                  f"{run.command}\n".encode())
        out.flush()
        child = subprocess.Popen(run.cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        # With the run's own process in the claim, a run that outlives a killed sweep still counts.
        if not claims.update(run, token, processes=[process_entry(os.getpid()), process_entry(child.pid)]):
            log.warning("%s: another sweep took its claim meanwhile (it looked stale there); "
                        "the run may be recorded twice", run)
        beat = time.monotonic()
        while True:
            try:
                status = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop is not None and stop.is_set():
                    child.terminate()
                    child.wait()
                    out.write(b"\n==> interrupted\n")
                    return None
                if time.monotonic() - beat > HEARTBEAT_S:
                    claims.heartbeat(run)
                    beat = time.monotonic()
        # Ctrl-C or a SIGTERM to the process group reaches the run before the sweep has set `stop`:
        # give the sweep a moment before calling a run killed by a signal a failure.
        if stop is not None and stop.wait(0.5 if status < 0 else 0):
            out.write(b"\n==> interrupted\n")
            return None
        out.write(f"==> exit status {status}\n".encode())
    return status


def _slurm_job() -> str | None:
    """This process's SLURM job (`1234_5` for an array task), if it runs in one."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")
