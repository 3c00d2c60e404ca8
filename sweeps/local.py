"""The local launcher: up to --jobs runs at once on this machine, each on its own GPU(s).

A small thread pool, one worker per slot; each worker runs `runner.run_task` (a main.py child process)
with its slot's CUDA_VISIBLE_DEVICES, and takes the next run as soon as its run ends. Runs that
another sweep holds are put aside and looked at again every RECHECK_S seconds: finished there, or
their holder gone (then they run here).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from qlora_clip.run.results import format_seconds
from sweeps.claims import Claims
from sweeps.plan import Run, SweepError
from sweeps.progress import Progress
from sweeps.runner import (
    DONE,
    FAILED,
    FINISHED_ELSEWHERE,
    HELD_ELSEWHERE,
    INTERRUPTED,
    Outcome,
    Task,
    is_finished,
    run_task,
)

log = logging.getLogger("sweep")

RECHECK_S = 10.0

Slot = tuple[str, ...]  # the GPUs of one concurrent run; () = the CPU


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (ids, or UUIDs)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d for d in listed.split(",") if d.strip()]
    import torch  # only here: listing the runs must stay fast

    return [str(i) for i in range(torch.cuda.device_count())]


def local_slots(devices: list[str] | None, gpus_per_run: int, jobs: int | None) -> list[Slot]:
    """One slot per concurrent run: k GPUs each (`--gpus_per_run`), or the CPU when there are none."""
    if gpus_per_run == 0:
        if devices:
            raise SweepError("--devices names GPUs, but --gpus_per_run 0 runs on the CPU; drop one of them")
        return [()] * (jobs or 1)
    if devices is None:
        devices = visible_gpus()
    if len(set(devices)) != len(devices):
        raise SweepError(f"--devices lists a GPU twice ({','.join(devices)}); each concurrent run gets its own")
    if not devices:
        if gpus_per_run > 1:
            raise SweepError(f"--gpus_per_run {gpus_per_run}: no GPU is visible; name them with --devices")
        return [()] * (jobs or 1)
    k = gpus_per_run
    groups = [tuple(devices[i:i + k]) for i in range(0, len(devices) - k + 1, k)]
    if not groups:
        raise SweepError(f"--gpus_per_run {k} needs {k} GPUs; --devices / CUDA_VISIBLE_DEVICES has {len(devices)}")
    if jobs is not None and jobs > len(groups):
        raise SweepError(f"--jobs {jobs}: {len(devices)} GPU(s) at {k} per run give {len(groups)} slot(s); "
                         "each concurrent run gets its own GPUs")
    unused = devices[len(groups) * k:]
    if unused:
        log.warning("GPU(s) %s left unused: %d GPUs do not split into runs of %d", ",".join(unused), len(devices), k)
    return groups[:jobs] if jobs else groups


def describe_slots(slots: list[Slot]) -> str:
    if not any(slots):
        return f"{len(slots)} run(s) at once on the CPU"
    return f"{len(slots)} run(s) at once, CUDA_VISIBLE_DEVICES " + " | ".join(",".join(s) for s in slots)


class LocalSweep:
    """Runs the given runs on the slots; `run()` returns the runs that failed for good."""

    def __init__(self, runs: list[Run], slots: list[Slot], results_file: str, retries: int) -> None:
        self.pending = deque(runs)
        self.slots = slots
        self.results_file = results_file
        self.retries = retries
        self.claims = Claims(results_file)
        self.free_slots: queue.Queue[Slot] = queue.Queue()
        for slot in slots:
            self.free_slots.put(slot)
        self.started: queue.Queue[Run] = queue.Queue()  # from the workers, for the progress line
        self.stop = threading.Event()
        self.held: dict[Run, float] = {}  # runs another sweep holds -> when we looked last
        self.failed: list[Outcome] = []
        self.progress = Progress(len(runs), len(slots))

    def run(self) -> list[Outcome]:
        """Raises KeyboardInterrupt (or the sweep's Interrupted) after stopping the runs in progress."""
        futures: set[Future] = set()
        with ThreadPoolExecutor(max_workers=len(self.slots), thread_name_prefix="slot") as pool:
            try:
                while self.pending or futures or self.held:
                    while self.pending and len(futures) < len(self.slots):
                        futures.add(pool.submit(self._work, self.pending.popleft()))
                    if not futures:  # only runs that other sweeps hold: look at them again later
                        time.sleep(1.0)
                    finished, _ = wait(futures, timeout=1.0, return_when=FIRST_COMPLETED)
                    for future in finished:
                        futures.remove(future)
                        self._record(future.result())
                    self._note_started()
                    self._look_at_held()
                    self.progress.refresh()
            except BaseException:
                self.stop.set()  # the workers stop their runs and release the claims
                for future in futures:
                    future.cancel()
                raise
            finally:
                self.progress.close()
        return self.failed

    def _work(self, run: Run) -> Outcome:
        slot = self.free_slots.get()
        try:
            return run_task(Task(run, self.results_file, self.retries), slot, self.stop, self.started.put)
        except Exception as err:  # say, the log folder is not writable: this run fails, the sweep goes on
            log.exception("%s: the sweep could not run it", run)
            return Outcome(run, FAILED, detail=f"sweep error: {err}")
        finally:
            self.free_slots.put(slot)

    def _note_started(self) -> None:
        while not self.started.empty():
            run = self.started.get()
            self.progress.start(str(run))
            log.info("start %s -> %s", run, run.log_file)

    def _record(self, outcome: Outcome) -> None:
        self._note_started()
        run = outcome.run
        if outcome.state == DONE:
            self.progress.finish(str(run), ok=True, seconds=outcome.seconds)
            log.info("done %s in %s (%s)", run, format_seconds(outcome.seconds), self.progress.line())
        elif outcome.state == FINISHED_ELSEWHERE:
            self.progress.finish(str(run), ok=True)
            log.info("%s: finished by another sweep, skipped", run)
        elif outcome.state == FAILED:
            self.failed.append(outcome)
            self.progress.finish(str(run), ok=False)
            log.error("FAILED %s: %s after %d attempt(s); see %s (%s)", run, outcome.detail, outcome.attempts,
                      run.log_file, self.progress.line())
        elif outcome.state == HELD_ELSEWHERE:
            if run not in self.held:
                log.info("%s is %s; waiting for it", run, outcome.detail)
            self.held[run] = time.monotonic()
        elif outcome.state == INTERRUPTED:
            self.progress.running.pop(str(run), None)

    def _look_at_held(self) -> None:
        """Runs other sweeps hold: finished there, or (their holder gone) back in line here."""
        for run, looked in list(self.held.items()):
            if time.monotonic() - looked < RECHECK_S:
                continue
            if is_finished(run, self.results_file):
                del self.held[run]
                self._record(Outcome(run, FINISHED_ELSEWHERE))
            elif self.claims.holder(run) is None:
                del self.held[run]
                self.pending.append(run)
            else:
                self.held[run] = time.monotonic()
