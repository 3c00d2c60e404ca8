"""The runs of a sweep, one per dataset x shots x seed, each with the exact command that runs it."""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from qlora_clip.run.spec import RunSpec, backbone_tag
from run_utils import build_parser, flag_defaults, normalised, validation_errors

MAIN = Path(__file__).resolve().parents[1] / "main.py"
# main.py flags the sweep sets itself; EXTRA_ARGS may not override them.
SWEEP_FLAGS = ("mode", "dataset", "shots", "seed", "backbone", "root_path", "results_file", "save_path", "run_group")


class SweepError(Exception):
    """The sweep cannot start: the message names the setting at fault."""


def shell_words(text: str, setting: str) -> list[str]:
    """`text` split as a shell would split it; a SweepError naming `setting` when its quotes do not close."""
    try:
        return shlex.split(text)
    except ValueError as err:  # shlex: "No closing quotation", "No escaped character"
        raise SweepError(f"{setting} {text!r}: {str(err).lower()}; quote it as you would in a shell") from None


@dataclass(frozen=True)
class Run:
    spec: RunSpec = field(compare=False, hash=False)  # the run main.py will make of `cmd`'s flags
    cmd: tuple[str, ...]  # the process the run is: python main.py ..., or python -m accelerate... main.py ...
    log_file: Path

    def __str__(self) -> str:
        protocol = f" {self.spec.protocol}" if self.spec.protocol != "fewshot" else ""
        return f"{self.spec.method} {self.spec.dataset}{protocol} {self.spec.shots}-shot seed {self.spec.seed}"

    @property
    def config(self) -> dict:
        """What makes it this run (RunSpec.identity): a results line with this config is this run finished."""
        return self.spec.identity

    @property
    def name(self) -> str:
        """A file-name-safe label (claim markers)."""
        return self.spec.name

    @property
    def command(self) -> str:
        """The command line exactly as the sweep starts it (shown by --dry-run and in each log)."""
        return shlex.join(self.cmd)


def launcher_prefix(gpus_per_run: int) -> list[str]:
    """`python main.py`, or for a run on several GPUs, `accelerate launch` with one process per GPU."""
    if gpus_per_run <= 1:
        return [sys.executable, str(MAIN)]
    # Port 0: accelerate picks a free port, so concurrent multi-GPU runs on one machine never collide.
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus_per_run),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", "0", str(MAIN)]


def default_group(modes: list[str], backbone: str, results_file: str) -> str:
    """The experiment-tracking group of a sweep's runs, e.g. 'results-qlora-ViT-B-16' ('...-methods-...' for
    several methods)."""
    return f"{Path(results_file).stem}-{modes[0] if len(modes) == 1 else 'methods'}-{backbone_tag(backbone)}"


def plan_runs(args: argparse.Namespace) -> list[Run]:
    """Every run of the sweep, method by method and dataset by dataset, each checked by main.py's own flag parser."""
    extra = shell_words(args.extra_args, "--extra_args (EXTRA_ARGS)")
    prefix = launcher_prefix(args.gpus_per_run)
    group = ["--run_group", args.group]
    runs = []
    for mode in args.modes:
        for dataset in dict.fromkeys(args.datasets):
            for shots in dict.fromkeys(args.shots):
                for seed in dict.fromkeys(args.seeds):
                    flags = ["--mode", mode, "--dataset", dataset, "--shots", str(shots), "--seed", str(seed),
                             "--backbone", args.backbone, "--root_path", args.root_path,
                             "--results_file", args.results_file, *group]
                    if args.save_path:
                        flags += ["--save_path", args.save_path]
                    spec = _checked_spec(flags, extra)
                    runs.append(Run(spec, tuple(prefix + flags + extra), spec.log_file(args.log_dir)))
    return runs


def _checked_spec(flags: list[str], extra: list[str]) -> RunSpec:
    parser = build_parser()
    try:
        ns = parser.parse_args(flags + extra)
    except SystemExit:  # argparse has printed which flag it rejected
        raise SweepError(f"main.py rejects the flags {shlex.join(extra)!r} (EXTRA_ARGS / --extra_args)") from None
    errors = validation_errors(ns)
    if errors:
        raise SweepError("main.py would reject every run: " + "; ".join(errors))
    intended = vars(parser.parse_args(flags))
    overridden = [f"--{k}" for k in SWEEP_FLAGS if k in intended and vars(ns)[k] != intended[k]]
    if overridden:
        raise SweepError(f"EXTRA_ARGS / --extra_args sets {', '.join(overridden)}, which the sweep sets itself; "
                         "use DATASETS, SHOTS, SEEDS, BACKBONE, ROOT_PATH, RESULTS_FILE, SAVE_PATH or GROUP instead")
    return RunSpec.from_flags(vars(normalised(ns)), flag_defaults())
