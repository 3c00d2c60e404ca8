"""The live progress line: done / running / failed / left, and an ETA from the finished runs' durations."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import IO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from qlora_clip.run.results import format_seconds


class Progress:
    """Counts of a sweep's runs, shown as a tqdm line on a terminal (and summarised in log lines)."""

    def __init__(self, total: int, slots: int, file: IO[str] | None = None, enabled: bool | None = None) -> None:
        self.total = total
        self.slots = max(slots, 1)
        self.done = 0
        self.failed = 0
        self.durations: list[float] = []  # of the runs finished here: the ETA's unit of work
        self.running: dict[str, float] = {}  # run -> when it started (time.monotonic)
        file = file or sys.stderr
        # Off when not on a terminal (CI, SLURM logs): the log lines below carry the same counts.
        self.bar = tqdm(total=total, unit="run", file=file, dynamic_ncols=True, leave=True,
                        disable=not file.isatty() if enabled is None else not enabled,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]{postfix}")
        self._logging = contextlib.ExitStack()
        if not self.bar.disable:  # log lines go above the bar instead of through it
            self._logging.enter_context(logging_redirect_tqdm())
        self.refresh()

    @property
    def left(self) -> int:
        return self.total - self.done - self.failed - len(self.running)

    def start(self, run: str) -> None:
        self.running[run] = time.monotonic()
        self.refresh()

    def finish(self, run: str, ok: bool, seconds: float | None = None) -> None:
        """A run ended (ok: its line is in the results file); `seconds` when it ran here."""
        self.running.pop(run, None)
        if ok:
            self.done += 1
            if seconds is not None:
                self.durations.append(seconds)
        else:
            self.failed += 1
        self.bar.update(1)
        self.refresh()

    def eta(self) -> float | None:
        """Seconds until the last run ends, each run taking the mean duration of the finished ones.

        The work left (runs not started, and what the running ones still need) is shared by the slots,
        but the sweep cannot end before its longest running run does.
        """
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        now = time.monotonic()
        running = [max(mean - (now - started), 0.0) for started in self.running.values()]
        return max(max(running, default=0.0), (self.left * mean + sum(running)) / self.slots)

    def line(self) -> str:
        eta = self.eta()
        return (f"done {self.done} | running {len(self.running)} | failed {self.failed} | left {self.left}"
                f" | ETA {'?' if eta is None else format_seconds(eta)}")

    def refresh(self) -> None:
        self.bar.set_postfix_str(self.line(), refresh=True)

    def close(self) -> None:
        self.bar.close()
        self._logging.close()
