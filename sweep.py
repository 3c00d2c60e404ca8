"""Run datasets x shots x seeds for one method, one `main.py` process per run, resumable.

A run counts as finished when the results file holds a line for it with the same flags (bookkeeping
flags such as --root_path aside, see results.BOOKKEEPING_FLAGS), so starting the sweep again after
an interruption runs only what is missing. A run that fails is logged and the sweep goes on; the exit
status is 1 when any run failed. Each run's output goes to the console and to
LOG_DIR/<backbone>/<dataset>/<K>shots_seed<S>_<mode>.log.

Defaults are the paper's protocol and can be set by environment variables (the run_*.sh scripts):
DATASETS, SHOTS, SEEDS, BACKBONE, ROOT_PATH, RESULTS_FILE, SAVE_PATH, LOG_DIR, EXTRA_ARGS.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from datasets import DATASET_NAMES
from methods import MODES
from protocol import PAPER_DATASETS, PAPER_SEEDS, PAPER_SHOTS
from results import comparable_config, finished_configs as read_finished
from run_utils import backbone_tag, build_parser, setup_logging, validation_errors

log = logging.getLogger("sweep")

MAIN = Path(__file__).resolve().with_name("main.py")
# main.py flags the sweep sets itself; EXTRA_ARGS may not override them.
SWEEP_FLAGS = ("mode", "dataset", "shots", "seed", "backbone", "root_path", "results_file", "save_path")


class SweepError(Exception):
    """The sweep cannot start: the message names the setting at fault."""


class Interrupted(Exception):
    """SIGTERM or Ctrl-C: stop after cleaning up the running child."""


@dataclass(frozen=True)
class Run:
    mode: str
    dataset: str
    shots: int
    seed: int
    argv: tuple[str, ...]
    log_file: Path
    config: dict = field(compare=False, hash=False)

    def __str__(self) -> str:
        return f"{self.mode} {self.dataset} {self.shots}-shot seed {self.seed}"

    @property
    def command(self) -> str:
        return shlex.join(["python", "main.py", *self.argv])


def _words(values: list[str]) -> list[str]:
    """`--datasets "a b" c` and `--datasets a,b c` both mean a, b, c (env vars hold one string)."""
    return [w for v in values for w in re.split(r"[\s,]+", v) if w]


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="sweep.py",
        description=__doc__.split("\n\n")[0],
        epilog="Any flag's default comes from the environment variable named after it in capitals.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--mode", choices=MODES, default=_env("MODE", "qlora"))
    p.add_argument("--datasets", nargs="+", default=[_env("DATASETS", " ".join(PAPER_DATASETS))])
    p.add_argument("--shots", nargs="+", default=[_env("SHOTS", " ".join(map(str, PAPER_SHOTS)))])
    p.add_argument("--seeds", nargs="+", default=[_env("SEEDS", " ".join(map(str, PAPER_SEEDS)))])
    p.add_argument("--backbone", default=_env("BACKBONE", "ViT-B/16"))
    p.add_argument("--root_path", default=_env("ROOT_PATH", "DATA"))
    p.add_argument("--results_file", default=_env("RESULTS_FILE", "results/results.jsonl"))
    p.add_argument("--save_path", default=_env("SAVE_PATH", ""),
                   help="save adapters under this folder (empty: do not save)")
    p.add_argument("--log_dir", default=_env("LOG_DIR", "logs"))
    p.add_argument("--extra_args", default=_env("EXTRA_ARGS", ""),
                   help="more main.py flags for every run, one shell-quoted string, e.g. '--n_iters 2'")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="list the runs, finished or to do, and run nothing")
    args = p.parse_args(argv)
    args.datasets = _words(args.datasets)
    try:
        args.shots = [int(w) for w in _words(args.shots)]
        args.seeds = [int(w) for w in _words(args.seeds)]
    except ValueError as err:
        p.error(f"--shots / --seeds (SHOTS / SEEDS) take whole numbers: {err}")
    for name in ("datasets", "shots", "seeds"):
        if not getattr(args, name):
            p.error(f"--{name} ({name.upper()}) is empty")
    unknown = [d for d in args.datasets if d not in DATASET_NAMES]
    if unknown:
        p.error(f"--datasets (DATASETS): unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASET_NAMES)}")
    return args


def plan_runs(args: argparse.Namespace) -> list[Run]:
    """Every run of the sweep, dataset by dataset, each checked by main.py's own flag parser."""
    extra = shlex.split(args.extra_args)
    runs = []
    for dataset in dict.fromkeys(args.datasets):
        for shots in dict.fromkeys(args.shots):
            for seed in dict.fromkeys(args.seeds):
                argv = ["--mode", args.mode, "--dataset", dataset, "--shots", str(shots), "--seed", str(seed),
                        "--backbone", args.backbone, "--root_path", args.root_path,
                        "--results_file", args.results_file]
                if args.save_path:
                    argv += ["--save_path", args.save_path]
                config = _checked_config(argv, extra)
                log_file = (Path(args.log_dir) / backbone_tag(args.backbone) / dataset
                            / f"{shots}shots_seed{seed}_{args.mode}.log")
                runs.append(Run(args.mode, dataset, shots, seed, tuple(argv + extra), log_file,
                                comparable_config(config)))
    return runs


def _checked_config(argv: list[str], extra: list[str]) -> dict:
    parser = build_parser()
    try:
        ns = parser.parse_args(argv + extra)
    except SystemExit:  # argparse has printed which flag it rejected
        raise SweepError(f"main.py rejects the flags {shlex.join(extra)!r} (EXTRA_ARGS / --extra_args)") from None
    errors = validation_errors(ns)
    if errors:
        raise SweepError("main.py would reject every run: " + "; ".join(errors))
    intended = vars(parser.parse_args(argv))
    overridden = [f"--{k}" for k in SWEEP_FLAGS if vars(ns)[k] != intended[k]]
    if overridden:
        raise SweepError(f"EXTRA_ARGS / --extra_args sets {', '.join(overridden)}, which the sweep sets itself; "
                         "use DATASETS, SHOTS, SEEDS, BACKBONE, ROOT_PATH, RESULTS_FILE or SAVE_PATH instead")
    return vars(ns)


def finished_configs(results_file: str, report: bool = False) -> list[dict]:
    """The comparable configs of the runs the results file records; with `report`, its bad lines are logged."""
    configs, problems = read_finished(results_file)
    for problem in problems if report else ():
        log.warning("%s", problem)
    return configs


def execute(run: Run, results_file: str) -> bool:
    """Run main.py in a child process (a crash there cannot end the sweep), teeing its output to the log."""
    run.log_file.parent.mkdir(parents=True, exist_ok=True)
    console = getattr(sys.stdout, "buffer", None)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(run.log_file, "ab") as out:  # appended: the log of a failed attempt survives its retry
        out.write(f"==> {time.strftime('%Y-%m-%d %H:%M:%S')} {run.command}\n".encode())
        out.flush()
        child = subprocess.Popen([sys.executable, str(MAIN), *run.argv], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, env=env)
        try:
            for chunk in iter(lambda: child.stdout.read1(1 << 16), b""):
                out.write(chunk)
                if console:
                    console.write(chunk)
                    console.flush()
            status = child.wait()
        except (Interrupted, KeyboardInterrupt):
            child.terminate()
            child.wait()
            out.write(b"\n==> interrupted\n")
            raise
        out.write(f"==> exit status {status}\n".encode())
    if status != 0:
        log.error("FAILED %s: exit status %d; see %s", run, status, run.log_file)
        return False
    if run.config not in finished_configs(results_file):
        log.error("FAILED %s: main.py exited 0 but %s has no line for it; see %s", run, results_file, run.log_file)
        return False
    return True


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        runs = plan_runs(args)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    done = finished_configs(args.results_file, report=True)
    todo = [run for run in runs if run.config not in done]
    log.info("%d runs of %s on %s: %d already in %s, %d to run", len(runs), args.mode, args.backbone,
             len(runs) - len(todo), args.results_file, len(todo))
    if args.dry_run:
        for run in runs:
            state = "todo" if run in todo else "done"
            print(f"{state}  {run}  log {run.log_file}\n      {run.command}")
        return 0

    signal.signal(signal.SIGTERM, _raise_interrupted)
    failed: list[Run] = []
    try:
        for i, run in enumerate(todo, start=1):
            # Read again: another sweep sharing the results file may have finished this run meanwhile.
            if run.config in finished_configs(args.results_file):
                log.info("[%d/%d] %s: finished elsewhere, skipped", i, len(todo), run)
                continue
            log.info("[%d/%d] %s -> %s", i, len(todo), run, run.log_file)
            if not execute(run, args.results_file):
                failed.append(run)
    except (Interrupted, KeyboardInterrupt):
        log.error("interrupted; start the sweep again to run what is missing")
        return 130
    if failed:
        log.error("%d of %d runs failed:\n%s", len(failed), len(todo),
                  "\n".join(f"  {run}: {run.log_file}" for run in failed))
        return 1
    log.info("sweep complete: every run is in %s", args.results_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
