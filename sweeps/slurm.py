"""The SLURM launcher: the runs still missing become one submitit job array.

Each array task calls `runner.run_task` for its run on the node SLURM gives it (with that node's GPUs),
so retries, logs and claims work as they do locally. Before submitting, the sweep claims each run as
queued, with a token the task presents to take the claim over when it starts: a sweep started again
meanwhile sees the runs queued and does not submit them twice (sweeps/claims.py). submitit writes its
own files (the sbatch script, the pickled task, each task's stdout/stderr) under LOG_DIR/submitit/.
"""
from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
import time
from pathlib import Path

import submitit

from qlora_clip.run.results import format_seconds
from sweeps.claims import Claims
from sweeps.plan import MAIN, Run, SweepError, shell_words
from sweeps.progress import Progress
from sweeps.runner import DONE, FAILED, Outcome, Task, is_finished, run_task

log = logging.getLogger("sweep")

POLL_S = 2.0  # cheap: submitit asks sacct at most once a minute however often we look
# sbatch options the sweep's own flags set; --sbatch may not set them a second time.
OWN_OPTIONS = {"partition": "--partition", "time": "--time", "gpus-per-node": "--gpus_per_run",
               "cpus-per-task": "--cpus_per_run", "mem": "--mem", "array": "--array_parallelism",
               "job-name": "--group", "output": "--log_dir", "error": "--log_dir"}


def minutes(text: str | None) -> int:
    """--time as whole minutes (what submitit takes): '90', '1:30:00' or '2-00:00:00'."""
    if text is None:
        raise SweepError("--launcher slurm needs --time (TIME): each run's time limit, e.g. 240 or 4:00:00")
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d):(\d\d)", text.strip())
    if text.strip().isdigit():
        total = int(text)
    elif match:
        days, hours, mins, secs = (int(g or 0) for g in match.groups())
        total = days * 1440 + hours * 60 + mins + (secs > 0)
    else:
        raise SweepError(f"--time (TIME) {text!r}: give minutes (240) or [D-]HH:MM:SS (4:00:00, 1-00:00:00)")
    if total < 1:
        raise SweepError(f"--time (TIME) {text!r} must be at least one minute")
    return total


def memory(text: str | None) -> str | None:
    if text is None or re.fullmatch(r"\d+[KMGT]?", text.strip()):
        return text and text.strip()
    raise SweepError(f"--mem (MEM) {text!r}: give SLURM's syntax, e.g. 64G or 500M")


def sbatch_options(text: str) -> dict[str, str | bool]:
    """'--account=lab --qos high --exclusive' -> {'account': 'lab', 'qos': 'high', 'exclusive': True}."""
    words, options = shell_words(text, "--sbatch (SBATCH)"), {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--") or word == "--":
            raise SweepError(f"--sbatch (SBATCH): {word!r} is not a long sbatch option (write --account=lab, "
                             "not -A lab)")
        key, has_value, value = word[2:].partition("=")
        if not has_value and i + 1 < len(words) and not words[i + 1].startswith("-"):
            value, i = words[i + 1], i + 1
        if key in OWN_OPTIONS:
            raise SweepError(f"--sbatch (SBATCH) sets --{key}; use the sweep's {OWN_OPTIONS[key]} instead")
        options[key] = value if (has_value or value) else True
        i += 1
    return options


def job_folder(log_dir: str) -> Path:
    return Path(log_dir) / "submitit" / "%j"


def slurm_parameters(args: argparse.Namespace) -> dict:
    """The SlurmExecutor parameters (submitit's names) of the sweep's flags."""
    repo = shlex.quote(str(MAIN.parent))
    params = {"job_name": args.group, "time": args.time,
              # The tasks unpickle sweeps.runner.run_task: the repository must be importable on the nodes.
              "setup": [f"export PYTHONPATH={repo}${{PYTHONPATH:+:$PYTHONPATH}}"]}
    if args.partition:
        params["partition"] = args.partition
    if args.gpus_per_run:
        params["gpus_per_node"] = args.gpus_per_run
    if args.cpus_per_run:
        params["cpus_per_task"] = args.cpus_per_run
    if args.mem:
        params["mem"] = args.mem
    if args.array_parallelism:
        params["array_parallelism"] = args.array_parallelism
    if args.sbatch:
        params["additional_parameters"] = dict(args.sbatch)
    return params


def sbatch_script(params: dict, folder: Path, n_runs: int) -> str:
    """The sbatch script submitit writes for an array of n_runs (shown by --dry-run; needs no SLURM here)."""
    # submitit's own builder, the one SlurmExecutor calls (submitit is pinned in requirements.txt; a
    # test checks this text against the script a real submission writes).
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=n_runs if n_runs > 1 else None, **params)


def make_executor(folder: Path, params: dict) -> submitit.Executor:
    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError as err:  # no srun on this machine
        raise SweepError(f"--launcher slurm: {err} (use --dry-run to see what would be submitted)") from None
    executor.update_parameters(**params)
    return executor


def launch(runs: list[Run], args: argparse.Namespace) -> list[Outcome] | None:
    """Submit the runs nobody holds as one job array; with --wait, follow it and return the failures
    (None when it does not follow an array)."""
    claims = Claims(args.results_file)
    tasks: list[Task] = []
    try:
        for run in runs:
            token, holder = claims.acquire(run, state="queued")
            if token is None:
                log.info("%s is %s; not submitted again", run, holder)
            elif is_finished(run, args.results_file):  # finished by another sweep since we read the file
                claims.release(run, token)
            else:
                tasks.append(Task(run, args.results_file, args.retries, token))
        if not tasks:
            log.info("nothing to submit")
            return None
        jobs = make_executor(job_folder(args.log_dir), slurm_parameters(args)).map_array(run_task, tasks)
    except BaseException:  # nothing was submitted: let the runs go
        for task in tasks:
            claims.release(task.run, task.token)
        raise
    for job, task in zip(jobs, tasks):
        claims.queued_as(task.run, task.token, job.job_id)
    array = jobs[0].job_id.split("_")[0]
    log.info("submitted %d run(s) as SLURM job %s; submitit's files in %s, each run's log in %s",
             len(jobs), array, job_folder(args.log_dir).parent, args.log_dir)
    if not args.wait:
        log.info("watch it with squeue -j %s; this command with --dry-run lists what is done, queued or "
                 "running, and started again it resubmits runs that failed", array)
        return None
    return follow(jobs, tasks, args.array_parallelism or 256)


def follow(jobs: list[submitit.Job], tasks: list[Task], parallel: int) -> list[Outcome]:
    """Wait for the jobs, keeping the progress line; the runs that failed for good."""
    progress = Progress(len(jobs), min(parallel, len(jobs)))
    waiting = dict(zip(jobs, tasks))
    failed = []
    try:
        while waiting:
            for job, task in list(waiting.items()):
                run = str(task.run)
                if job.done():
                    del waiting[job]
                    outcome = _outcome(job, task)
                    progress.finish(run, ok=outcome.state != FAILED,
                                    seconds=outcome.seconds if outcome.state == DONE else None)
                    if outcome.state == FAILED:
                        failed.append(outcome)
                        log.error("FAILED %s: %s; see %s (%s)", task.run, outcome.detail, task.run.log_file,
                                  progress.line())
                    elif outcome.state == DONE:
                        log.info("done %s in %s (%s)", task.run, format_seconds(outcome.seconds), progress.line())
                    else:
                        log.info("%s: %s %s (%s)", task.run, outcome.state, outcome.detail, progress.line())
                elif run not in progress.running and job.state == "RUNNING":
                    progress.start(run)
            if waiting:
                time.sleep(POLL_S)
    finally:
        progress.close()
    return failed


def _outcome(job: submitit.Job, task: Task) -> Outcome:
    try:
        return job.result()
    except Exception as err:  # the task itself died (node failure, out of memory, scancel, time limit)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return Outcome(task.run, FAILED, detail=f"SLURM job {job.job_id} ended without a result ({first}); "
                                                f"see {job.paths.stderr}")
