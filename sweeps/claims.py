"""Marker files that keep two sweeps from running the same run at once, on one machine or several.

A run that a sweep is running, or has queued in SLURM, has a marker in the claims folder next to the
results file (`results.jsonl.claims/`, on the filesystem the sweeps share). The marker says who holds
the run: the host and the processes (pid and start time) for a run in progress, the SLURM job for a
queued one. A marker is left behind when its sweep is killed, so a marker only counts while its holder
is alive:

- on the same host, while one of its processes still runs (pid and start time match, so a reused pid
  does not count);
- from another host, while its heartbeat is fresh: the holder touches the marker every HEARTBEAT_S
  seconds, and a marker untouched for LEASE_S seconds is stale;
- a run queued in SLURM, while `squeue` still lists its job (where there is no `squeue`, it counts).

A stale marker is replaced and the run is done again. Every read-judge-write of markers happens under
one lock file, so two sweeps cannot both take a run; markers are written whole (write, then rename).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import psutil

from qlora_clip.run.results import timestamp
from sweeps.plan import Run

log = logging.getLogger("sweep")

HEARTBEAT_S = 30.0
LEASE_S = 300.0  # ten missed heartbeats: a marker from another host is stale after this long untouched


@dataclass(frozen=True)
class Claim:
    """The content of a marker: who holds a run."""
    run: str
    token: str  # the holder's secret: a SLURM job takes over the claim its sweep made by presenting it
    state: str  # "running" or "queued" (submitted to SLURM, not started yet)
    host: str
    processes: list[tuple[int, float]] = field(default_factory=list)  # (pid, start time): the holder and its run
    slurm_job: str | None = None
    since: str = ""
    log_file: str = ""

    def __str__(self) -> str:
        if self.state == "queued":
            return f"queued in SLURM job {self.slurm_job or '(being submitted)'} from {self.host}"
        where = f"SLURM job {self.slurm_job} on {self.host}" if self.slurm_job else self.host
        return f"running on {where} (pid {', '.join(str(p) for p, _ in self.processes)}) since {self.since}"


def process_entry(pid: int) -> tuple[int, float]:
    return pid, psutil.Process(pid).create_time()


def _alive(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - started) < 1.0 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # zombies included
        return False
    except psutil.AccessDenied:  # another user's process: it exists, which is all we can tell
        return True


class SlurmQueue:
    """The jobs `squeue` lists (array tasks one per line, `1234_5`), asked again when the answer is old."""

    def __init__(self) -> None:
        self._jobs: set[str] | None = None
        self._asked_at = -float("inf")

    def jobs(self, newer_than: float) -> set[str] | None:
        """The queue as seen after time `newer_than` (a marker's mtime: its job must be in that answer).

        None when SLURM cannot be asked from here (no squeue, or it failed).
        """
        now = time.time()
        # A few seconds of margin: the marker's mtime comes from the file server's clock.
        if self._asked_at < newer_than + 5 or now - self._asked_at > HEARTBEAT_S:
            self._asked_at = now
            self._jobs = None
            if shutil.which("squeue"):
                done = subprocess.run(["squeue", "--noheader", "--array", "--format=%i"], capture_output=True,
                                      text=True, timeout=60)
                if done.returncode == 0:
                    self._jobs = {line.strip() for line in done.stdout.splitlines() if line.strip()}
                else:
                    log.warning("squeue failed (%s); runs queued in SLURM count as queued", done.stderr.strip())
        return self._jobs


def stale_reason(claim: Claim, written_at: float, queue: SlurmQueue, host: str | None = None) -> str | None:
    """None while the claim's holder is alive, else why the claim is stale (`written_at`: the marker's mtime)."""
    if claim.slurm_job:
        jobs = queue.jobs(newer_than=written_at)
        if jobs is not None and claim.slurm_job not in jobs:
            return f"SLURM job {claim.slurm_job} is no longer queued or running"
        if claim.state == "queued":
            return None  # waiting in the queue: nobody touches its marker until it starts
    if claim.host == (host or socket.gethostname()):
        if any(_alive(pid, started) for pid, started in claim.processes):
            return None
        return "its processes on this host are gone"
    silent = time.time() - written_at
    if silent < LEASE_S:
        return None
    return f"no heartbeat from {claim.host} for {silent:.0f}s"


class Claims:
    """The markers of one results file's runs."""

    def __init__(self, results_file: str | os.PathLike) -> None:
        self.folder = Path(f"{results_file}.claims")
        self.queue = SlurmQueue()

    def path(self, run: Run) -> Path:
        digest = hashlib.sha256(json.dumps(run.config, sort_keys=True).encode()).hexdigest()[:12]
        return self.folder / f"{run.name}-{digest}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read(self, run: Run) -> tuple[Claim, float] | None:
        """The run's marker and when it was last written or touched (its mtime), or None."""
        path = self.path(run)
        try:
            claim = Claim(**json.loads(path.read_text()))
            written_at = path.stat().st_mtime
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as err:  # not ours, or from an older layout: nobody can be waiting on it
            log.warning("%s: unreadable marker (%s); ignored", path, err)
            return None
        return replace(claim, processes=[tuple(p) for p in claim.processes]), written_at

    def holder(self, run: Run) -> Claim | None:
        """Who holds the run now, if anyone alive does (read-only: a stale marker stays until replaced)."""
        found = self.read(run)
        if found is None or stale_reason(found[0], found[1], self.queue) is not None:
            return None
        return found[0]

    def acquire(self, run: Run, state: str = "running", token: str | None = None,
                slurm_job: str | None = None) -> tuple[str | None, Claim | None]:
        """Take the run for this process: (token, None), or (None, the live claim of someone else).

        `token` is the one a sweep gave its SLURM job when it queued the run: a job presenting it takes
        the claim over instead of finding it taken.
        """
        with self._locked():
            found = self.read(run)
            if found is not None and found[0].token != token:
                reason = stale_reason(found[0], found[1], self.queue)
                if reason is None:
                    return None, found[0]
                log.warning("%s: its claim (%s) is stale, %s; the run is done again", run, found[0], reason)
            claim = Claim(str(run), token or uuid.uuid4().hex, state, socket.gethostname(),
                          [process_entry(os.getpid())], slurm_job, timestamp(), str(run.log_file))
            self._write(run, claim)
            return claim.token, None

    def update(self, run: Run, token: str, **changes: object) -> bool:
        """Change our own claim (say, add the run's process); False when it is no longer ours."""
        with self._locked():
            found = self.read(run)
            if found is None or found[0].token != token:
                return False
            self._write(run, replace(found[0], **changes))
            return True

    def queued_as(self, run: Run, token: str, slurm_job: str) -> None:
        """Record the SLURM job of a run we queued, unless the job has already started and taken it over."""
        with self._locked():
            found = self.read(run)
            if found is not None and found[0].token == token and found[0].state == "queued":
                self._write(run, replace(found[0], slurm_job=slurm_job))

    def heartbeat(self, run: Run) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path(run))

    def release(self, run: Run, token: str) -> None:
        with self._locked():
            found = self.read(run)
            if found is not None and found[0].token == token:
                self.path(run).unlink()

    def _write(self, run: Run, claim: Claim) -> None:
        path = self.path(run)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(claim), indent=1))
        os.replace(tmp, path)  # readers without the lock see the old marker or the new, never half of one
