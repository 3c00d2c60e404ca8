"""Experiment tracking: `--report_to tensorboard wandb` sends a run's metrics where researchers watch them.

A Tracker fans every report out to its backends, one per `--report_to` entry:
- per optimizer step (`on_step`, a trainer.train callback): the loss, the learning rate, the step's
  wall time, images per second and, under fp16, the GradScaler's scale;
- per evaluation (`log_eval`): the accuracy, at the step it was measured after;
- once: the run's full config (`log_config`, when the tracker starts) and its results line
  (`log_results`, at the end).
Metric names follow transformers' Trainer ("train/loss", "train/learning_rate", "eval/accuracy"),
so dashboards built for Trainer runs read ours. With `--report_to none` (the default) the tracker
has no backend and every call does nothing; only the main process of a distributed run reports.

A run logs into LOGGING_DIR/[RUN_GROUP/]RUN_NAME (TensorBoard's event files, W&B's offline files);
a second run of the same name gets RUN_NAME-2 rather than mixing its curves into the first's,
while a --resume run continues in the folder it was interrupted in, its steps replacing the
interrupted run's from where it resumed.
"""
from __future__ import annotations

import atexit
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

from qlora_clip.run import schema
from qlora_clip.errors import UserError
from qlora_clip.flags import BOOKKEEPING, flag

if TYPE_CHECKING:
    from qlora_clip.training.result import StepRecord

REPORT_TO = ("none", "tensorboard", "wandb")
WANDB_INSTALL = ("--report_to wandb needs the wandb package, which is optional and not installed: "
                 "`pip install wandb`, then `wandb login` (or set WANDB_MODE=offline to log without an "
                 "account and upload later with `wandb sync`)")
# W&B groups runs into projects; ours go to this one unless WANDB_PROJECT names another.
WANDB_DEFAULT_PROJECT = "qlora-clip"


@dataclass(frozen=True)
class TrackingConfig:
    """The tracking flags; RunSpec.tracking fills in the run's name and whether it resumes."""
    report_to: tuple[str, ...] = flag(("none",), "where to send per-step loss, learning rate, speed and the "
                                      "accuracies (several allowed; wandb is optional: pip install wandb)",
                                      group="experiment tracking", role=BOOKKEEPING, nargs="+", choices=REPORT_TO)
    run_name: str | None = flag(None, "the run's name in TensorBoard / W&B and the results line; unset: "
                                "<mode>-<dataset>-<K>shot-seed<S>", group="experiment tracking", role=BOOKKEEPING,
                                type=str)
    run_group: str | None = flag(None, "a group of runs, e.g. a sweep: W&B's group, a TensorBoard folder level",
                                 group="experiment tracking", role=BOOKKEEPING, type=str)
    logging_dir: Path = flag("runs", "tracking logs go to LOGGING_DIR/[RUN_GROUP/]RUN_NAME",
                             group="experiment tracking", role=BOOKKEEPING, convert=Path)
    resume: bool = False  # continue in the folder of the interrupted run (--resume); not a flag here

    @property
    def backends(self) -> tuple[str, ...]:
        """The backends to report to (`none` names none)."""
        return tuple(name for name in self.report_to if name != "none")


class Backend(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_config(self, config: dict) -> None: ...
    def log_results(self, record: dict) -> None: ...
    def close(self) -> None: ...


def wandb_installed() -> bool:
    return importlib.util.find_spec("wandb") is not None


def log_folder(config: TrackingConfig) -> Path:
    """LOGGING_DIR/[GROUP/]NAME, or NAME-2, NAME-3, ... when an earlier run already logged there."""
    base = config.logging_dir / config.run_group if config.run_group else config.logging_dir
    candidates = [base / config.run_name] + [base / f"{config.run_name}-{n}" for n in range(2, 1000)]
    taken = [folder for folder in candidates if folder.exists()]
    if config.resume and taken:
        return taken[-1]
    return next(folder for folder in candidates if not folder.exists())


def step_metrics(record: StepRecord) -> dict[str, float]:
    """One optimizer step's metrics, under transformers' Trainer names where it has one."""
    metrics = {
        "train/loss": record.loss,
        "train/learning_rate": record.lr,
        "train/step_seconds": record.seconds,
        "train/samples_per_second": record.images / record.seconds if record.seconds > 0 else 0.0,
    }
    if record.grad_scale is not None:
        metrics["train/grad_scale"] = record.grad_scale
    return metrics


def flat_scalars(record: dict, prefix: str = "") -> dict[str, float | int | str | bool]:
    """A nested dict as 'a/b' keys with scalar values (lists joined by spaces, None dropped)."""
    flat: dict[str, float | int | str | bool] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_scalars(value, f"{name}/"))
        elif isinstance(value, (list, tuple)):
            flat[name] = " ".join(map(str, value))
        elif value is not None:
            flat[name] = value
    return flat


class TensorBoardBackend:
    """Event files readable by `tensorboard --logdir LOGGING_DIR`; config and results as text and hparams."""

    def __init__(self, folder: Path, continues: bool = False):
        from torch.utils.tensorboard import SummaryWriter

        # Flushed every 30 s, so a running job shows up without waiting for its end.
        self.writer = SummaryWriter(log_dir=str(folder), flush_secs=30)
        self.config: dict = {}
        # Continuing an interrupted run's folder: its steps from our first one on are replaced.
        self.restart_pending = continues
        # A run that dies with an error still gets its buffered events written.
        atexit.register(self.close)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.restart_pending and any(tag.startswith("train/") for tag in metrics):
            self.restart_at(step)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def restart_at(self, step: int) -> None:
        """Tell TensorBoard that training restarted at `step`: it then hides the events an interrupted
        run logged at this step and later (what SummaryWriter's purge_step does at creation)."""
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        self.writer.file_writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
        self.restart_pending = False

    def log_config(self, config: dict) -> None:
        self.config = config
        self.writer.add_text("config", _json_block(config))

    def log_results(self, record: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        self.writer.add_text("results", _json_block(record))
        # The HParams tab: this run's flags against its accuracies, next to the other runs in the folder.
        metrics = {"eval/zero_shot_accuracy": record.get("zero_shot_acc"), "eval/accuracy": record.get("test_acc")}
        metrics = {tag: value for tag, value in metrics.items() if value is not None}
        for summary in hparams(flat_scalars(self.config), metrics):
            self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        atexit.unregister(self.close)
        self.writer.close()


class WandbBackend:
    """A W&B run named after the run, in the run's group; WANDB_MODE=offline logs without network."""

    def __init__(self, folder: Path, config: TrackingConfig):
        try:
            import wandb
        except ImportError as err:
            raise UserError(WANDB_INSTALL) from err
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", WANDB_DEFAULT_PROJECT),
                              name=config.run_name, group=config.run_group, dir=str(folder))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_config(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_results(self, record: dict) -> None:
        # The config is already the run's config; the rest of the line becomes its summary.
        self.run.summary.update(flat_scalars({k: v for k, v in record.items() if k != "config"}))

    def close(self) -> None:
        self.run.finish()


def _json_block(record: dict) -> str:
    # TensorBoard renders text as Markdown: indent by four spaces to show the JSON as code.
    return "\n".join("    " + line for line in json.dumps(record, indent=2, sort_keys=True, default=str).splitlines())


class Tracker:
    """Sends a run's reports to its backends; without backends every call does nothing."""

    def __init__(self, run_name: str, run_group: str | None = None, folder: Path | None = None,
                 backends: Sequence[Backend] = ()):
        self.run_name = run_name
        self.run_group = run_group
        self.folder = folder
        self.backends = list(backends)

    def fields(self) -> dict:
        """What the results line records about the tracking: run name, group, log folder."""
        return schema.fields(run_name=self.run_name, run_group=self.run_group,
                             tracking_dir=str(self.folder) if self.folder is not None else None)

    def step_callbacks(self) -> list:
        """What the trainer should call per step: nothing without backends, since building a
        StepRecord reads the loss from the device (a host sync the step need not pay)."""
        return [self.on_step] if self.backends else []

    def on_step(self, record: StepRecord) -> None:
        if self.backends:
            metrics = step_metrics(record)
            for backend in self.backends:
                backend.log_metrics(metrics, record.step)

    def log_eval(self, metrics: dict[str, float], step: int) -> None:
        """Evaluation results, as eval/<name>, at the optimizer step they were measured after."""
        for backend in self.backends:
            backend.log_metrics({f"eval/{name}": value for name, value in metrics.items()}, step)

    def log_config(self, config: dict) -> None:
        for backend in self.backends:
            backend.log_config(config)

    def log_results(self, record: dict) -> None:
        for backend in self.backends:
            backend.log_results(record)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        self.backends = []

    def finish(self, record: dict) -> None:
        """Report the results line and close the backends."""
        self.log_results(record)
        self.close()


def start_tracking(config: TrackingConfig, run_config: dict, main_process: bool = True) -> Tracker:
    """A Tracker with the backends of `config.backends` (none off the main process), config logged."""
    if not config.backends or not main_process:
        return Tracker(config.run_name, config.run_group)
    folder = log_folder(config)
    continues = folder.exists()  # only with --resume: log_folder picks a fresh folder otherwise
    backends: list[Backend] = []
    for name in config.backends:
        if name == "tensorboard":
            backends.append(TensorBoardBackend(folder, continues))
        elif name == "wandb":
            backends.append(WandbBackend(folder, config))
        else:
            raise UserError(f"--report_to {name}: choose from {', '.join(REPORT_TO)}")
    tracker = Tracker(config.run_name, config.run_group, folder, backends)
    tracker.log_config(run_config)
    return tracker
