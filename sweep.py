"""Run methods x datasets x shots x seeds, one `main.py` process per run: resumable, on every GPU of
a machine or as a SLURM job array.

A run counts as finished when the results file holds a line for it with the same flags (bookkeeping
flags such as --root_path aside, see results.BOOKKEEPING_FLAGS), so starting the sweep again after
an interruption runs only what is missing. A run another sweep is running or has queued in SLURM
(sharing the results file, on this machine or another) is left to it; the marker of a killed sweep
is recognised as stale and its run is done again (sweeps/claims.py). A failing run is retried
--retries times, logged, and the sweep goes on; the exit status is 1 when any run failed for good.
Each run's output goes to LOG_DIR/<backbone>/<dataset>/<K>shots/seed<S>/<method>.log (RunSpec.log_file).

--launcher local (default) runs up to --jobs runs at once, each on its own GPU(s) (--devices,
--gpus_per_run; on a machine without GPUs, one run at a time unless --jobs says more).
--launcher slurm submits the missing runs as one submitit job array (--partition, --time, ...).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys

from datasets import DATASET_NAMES
from qlora_clip.methods.table import (ADAPTER_MODES, BASELINE_MODES, FULL_PRECISION_MODES, LEADER_MODES, MODES,
                                      PROMPT_LEARNER_MODES)
from qlora_clip.paper import PAPER_DATASETS, PAPER_SEEDS, PAPER_SHOTS
from qlora_clip.run.results import recorded_configs
from run_utils import flag_defaults, setup_logging
from sweeps import slurm
from sweeps.claims import Claims
from sweeps.local import LocalSweep, Slot, describe_slots, local_slots
from sweeps.plan import Run, SweepError, default_group, plan_runs
from sweeps.runner import Outcome

log = logging.getLogger("sweep")

SLURM_ONLY = ("partition", "time", "cpus_per_run", "mem", "array_parallelism", "sbatch")
LOCAL_ONLY = ("jobs", "devices")


class Interrupted(Exception):
    """SIGTERM: stop like Ctrl-C, after stopping the runs in progress."""


def _words(values: list[str]) -> list[str]:
    """`--datasets "a b" c` and `--datasets a,b c` both mean a, b, c (env vars hold one string)."""
    return [w for v in values for w in re.split(r"[\s,]+", v) if w]


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _parser()
    args = p.parse_args(argv)
    _read_launcher_flags(p, args)
    _check(p, args)
    return args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sweep.py",
        description=__doc__.split("\n\n")[0],
        epilog="A flag that takes a value gets its default from the environment variable named after it "
               "in capitals (DATASETS, JOBS, PARTITION, ...); the flags of one launcher only from the "
               "command line when the other launcher is chosen.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--mode", choices=MODES, default=None, metavar="METHOD",
                   help="one method (MODE; default qlora); --modes sweeps several")
    p.add_argument("--modes", nargs="+", default=None, metavar="METHOD",
                   help="methods to sweep, each over datasets x shots x seeds (MODES); 'all' = every adapter "
                        "method of the table, 'full-precision' = every adapter method on the full-precision base "
                        "(docs/methods.md), 'baselines' = every baseline (docs/baselines.md), 'prompts' = the prompt "
                        "learners (CoCoOp, KgCoOp, MaPLe, PromptSRC), 'leaders' = the field's 2025 fixed-hyperparameter "
                        "methods (CLIP-SVD, 2SFS, ProKeR, CLAP)")
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
    p.add_argument("--group", default=_env("GROUP"),
                   help="experiment-tracking group of the runs (main.py --run_group) "
                        "[default: <results file name>-<mode>-<backbone>]")
    p.add_argument("--retries", type=int, default=_env("RETRIES", "0"),
                   help="run a failed run up to this many more times")
    p.add_argument("--gpus_per_run", type=int, default=_env("GPUS_PER_RUN", "1"),
                   help="GPUs per run; above 1 the run is started with accelerate launch (one process per GPU); "
                        "0 = the CPU")
    p.add_argument("--launcher", choices=("local", "slurm"), default=_env("LAUNCHER", "local"))
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="list the runs, finished or to do, with the exact commands (and for SLURM the sbatch "
                        "script); start nothing")

    local = p.add_argument_group("--launcher local")
    local.add_argument("--jobs", type=int,
                       help="runs at once [default: one per --gpus_per_run GPUs of --devices; 1 without GPUs]")
    local.add_argument("--devices", nargs="+",
                       help="GPUs to spread the runs over, as CUDA_VISIBLE_DEVICES names them "
                            "[default: every visible GPU]")

    cluster = p.add_argument_group("--launcher slurm")
    cluster.add_argument("--partition")
    cluster.add_argument("--time", help="time limit of each run: minutes, or [D-]HH:MM:SS (required)")
    cluster.add_argument("--cpus_per_run", type=int)
    cluster.add_argument("--mem", help="memory per run, SLURM syntax: 64G, 500M")
    cluster.add_argument("--array_parallelism", type=int, help="at most this many runs of the array at once [256]")
    cluster.add_argument("--sbatch",
                         help="more sbatch options, one shell-quoted string, e.g. '--account=lab --qos=high'")
    cluster.add_argument("--wait", action="store_true",
                         help="follow the jobs until they end (progress, failures, exit status) "
                              "instead of returning once they are submitted")
    return p


def _read_launcher_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    # Flags of the other launcher are an error on the command line; their environment variables
    # (TIME, MEM, ... are common names) are only read for the launcher in use.
    other = LOCAL_ONLY if args.launcher == "slurm" else (*SLURM_ONLY, "wait")
    misplaced = [f"--{name}" for name in other if getattr(args, name) not in (None, False)]
    if misplaced:
        p.error(f"{', '.join(misplaced)}: only for --launcher {'local' if args.launcher == 'slurm' else 'slurm'}")
    for name in LOCAL_ONLY if args.launcher == "local" else SLURM_ONLY:
        if getattr(args, name) is None and _env(name.upper()) is not None:
            setattr(args, name, _env(name.upper()))


def _modes(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """--modes (or MODES), else --mode (or MODE), else qlora; 'all', 'full-precision', 'baselines', 'prompts' and
    'leaders'
    expand."""
    if args.mode is not None and args.modes is not None:
        p.error("--mode and --modes: give one (--modes takes one method too)")
    words = _words(args.modes) if args.modes is not None else (
        [args.mode] if args.mode else _words([_env("MODES", "")]) or [_env("MODE", "qlora")])
    groups = {"all": list(ADAPTER_MODES), "full-precision": list(FULL_PRECISION_MODES),
              "baselines": list(BASELINE_MODES), "prompts": list(PROMPT_LEARNER_MODES),
              "leaders": list(LEADER_MODES)}
    modes = list(dict.fromkeys(m for w in words for m in groups.get(w, [w])))
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        p.error(f"--modes (MODES): unknown method(s) {', '.join(unknown)}; choose from all, full-precision, baselines, "
                f"prompts, leaders, {', '.join(MODES)}")
    return modes


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Normalise the word lists and numbers, and stop with the flag at fault before anything runs."""
    args.modes = _modes(p, args)
    args.datasets = _words(args.datasets)
    try:
        args.shots = [int(w) for w in _words(args.shots)]
        args.seeds = [int(w) for w in _words(args.seeds)]
        for name in ("jobs", "cpus_per_run", "array_parallelism"):
            if isinstance(getattr(args, name), str):  # from the environment
                setattr(args, name, int(getattr(args, name)))
    except ValueError as err:
        p.error(f"SHOTS, SEEDS, JOBS, CPUS_PER_RUN and ARRAY_PARALLELISM take whole numbers: {err}")
    for name in ("datasets", "shots", "seeds"):
        if not getattr(args, name):
            p.error(f"--{name} ({name.upper()}) is empty")
    unknown = [d for d in args.datasets if d not in DATASET_NAMES]
    if unknown:
        p.error(f"--datasets (DATASETS): unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASET_NAMES)}")
    for name, least in (("jobs", 1), ("retries", 0), ("gpus_per_run", 0), ("cpus_per_run", 1),
                        ("array_parallelism", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            p.error(f"--{name} ({name.upper()}) must be >= {least} (got {value})")
    if args.devices is not None:
        args.devices = _words(args.devices if isinstance(args.devices, list) else [args.devices])
    args.group = args.group or default_group(args.modes, args.backbone, args.results_file)
    if args.launcher == "slurm":
        try:
            args.time = slurm.minutes(args.time)
            args.sbatch = slurm.sbatch_options(args.sbatch or "")
            args.mem = slurm.memory(args.mem)
        except SweepError as err:
            p.error(str(err))


def done_configs(results_file: str) -> list[dict]:
    """The identities of the runs the results file records (its unreadable lines are logged)."""
    configs, problems = recorded_configs(results_file, flag_defaults())
    for problem in problems:
        log.warning("%s", problem)
    return configs


def print_plan(args: argparse.Namespace, runs: list[Run], todo: list[Run], slots: list[Slot]) -> None:
    """--dry-run: how the runs would be started, then every run with its state and exact command."""
    claims = Claims(args.results_file)
    holders = {run: claims.holder(run) for run in todo}
    if args.launcher == "local":
        log.info("local launcher: %s", describe_slots(slots))
    else:
        missing = [run for run in todo if holders[run] is None]
        print(f"SLURM: the {len(missing)} missing run(s) would be one job array; its sbatch script:")
        print(slurm.sbatch_script(slurm.slurm_parameters(args), slurm.job_folder(args.log_dir), len(missing)))
    for run in runs:
        holder = holders.get(run)
        state = "done" if run not in holders else "todo" if holder is None else holder.state
        print(f"{state}  {run}  log {run.log_file}" + (f"  [{holder}]" if holder else "")
              + f"\n      {run.command}")


def report(failed: list[Outcome], todo: list[Run], results_file: str) -> int:
    if failed:
        log.error("%d of %d runs failed:\n%s", len(failed), len(todo),
                  "\n".join(f"  {o.run}: {o.detail}; log {o.run.log_file}" for o in failed))
        return 1
    log.info("sweep complete: every run is in %s", results_file)
    return 0


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        runs = plan_runs(args)
        slots = local_slots(args.devices, args.gpus_per_run, args.jobs) if args.launcher == "local" else []
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    done = done_configs(args.results_file)
    todo = [run for run in runs if run.config not in done]
    log.info("%d runs of %s on %s: %d already in %s, %d to run", len(runs), ", ".join(args.modes), args.backbone,
             len(runs) - len(todo), args.results_file, len(todo))
    if args.dry_run:
        print_plan(args, runs, todo, slots)
        return 0

    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        if args.launcher == "local":
            log.info("%s", describe_slots(slots))
            return report(LocalSweep(todo, slots, args.results_file, args.retries).run(), todo, args.results_file)
        failed = slurm.launch(todo, args)
        return 0 if failed is None else report(failed, todo, args.results_file)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt):
        if args.launcher == "local":
            log.error("interrupted; start the sweep again to run what is missing")
        else:
            log.error("interrupted; runs already submitted go on in SLURM (scancel stops them)")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
