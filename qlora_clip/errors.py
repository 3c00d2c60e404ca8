"""The error type for bad user input, in a module of its own so library code never imports the CLI."""
from __future__ import annotations

from dataclasses import dataclass


class UserError(Exception):
    """A problem with the user's input; the message names the flag or path at fault and what to do."""


@dataclass(frozen=True)
class WorkerError:
    """A UserError raised while a DataLoader worker prepared a sample, carried back as a value.

    Raised in the worker, the loader would raise it again in the main process with the worker's
    whole traceback in its message; as a value, the main process raises the one-line original
    (`raise_worker_error`). The same path serves num_workers=0, so both behave alike.
    """
    message: str


def first_worker_error(samples: list) -> WorkerError | None:
    return next((sample for sample in samples if isinstance(sample, WorkerError)), None)


def raise_worker_error(batch: object) -> None:
    """Raise the UserError a worker sent back in place of `batch`, if it did."""
    if isinstance(batch, WorkerError):
        raise UserError(batch.message)
