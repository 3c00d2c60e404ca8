"""Results files: one JSON object per line, one line per run. Writing, reading, and run identity.

Everything that reads or writes results goes through here: main.py appends a line, the sweep
and `--resume` decide whether two runs are the same run, summarize.py reads lines into tables.
A line that is not a JSON object with the identifying fields is reported with its line number and
skipped, never silently dropped and never allowed to stop the reading of the lines after it.
"""
from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path

from qlora_clip.errors import UserError

log = logging.getLogger(__name__)

# The fields that say which run a line belongs to; a line without them cannot be placed in a table.
IDENTITY_FIELDS = ("mode", "dataset", "shots", "seed", "backbone")

# Flags that say where things are read or written, or how the work is spread, but not what a run
# computes: two runs differing only in these are the same run (sweeps skip it, --resume accepts it).
# --protocol and --eval_datasets are not among them: the first changes what is trained and tested,
# and a line with --eval_datasets holds accuracies that a line without them lacks, so a sweep asked
# for those targets must not count a run recorded without them as done.
BOOKKEEPING_FLAGS = frozenset({"root_path", "num_workers", "results_file", "save_path", "device",
                               "checkpoint_every", "checkpoint_dir", "resume", "merge_export", "overwrite_export",
                               "decode_budget_gb", "eval_cache_dir",
                               "report_to", "run_name", "run_group", "logging_dir"})

LIBRARIES = ("torch", "torchvision", "transformers", "peft", "bitsandbytes", "accelerate")


# --- writing ------------------------------------------------------------------------------------

def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line so that earlier lines are never damaged and a failed write leaves nothing.

    One write() on an O_APPEND descriptor under an exclusive lock: concurrent runs cannot
    interleave, and a crash leaves at worst a torn last line, never a changed earlier one. When
    the write fails (a full disk stops it part way), the file is cut back to its size before it,
    so no fragment swallows the next run's line, and the line goes to the log so the run's result
    is not lost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size:
            # A torn line from a killed writer would swallow ours: start on a fresh line.
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = b"\n" + line
        try:
            written = 0
            while written < len(line):  # write() may stop short (a signal); the lock keeps the rest ours
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except OSError as err:
            raise _failed_append(path, fd, size, line, err) from err
    finally:
        os.close(fd)


def _failed_append(path: Path, fd: int, size: int, line: bytes, err: OSError) -> UserError:
    """Cut the file back to `size` (still under the lock) and say what happened."""
    log.error("the results line that could not be written to %s:\n%s", path, line.decode().strip())
    try:
        os.ftruncate(fd, size)
        state = "the file is as it was before"
    except OSError:
        state = "and it could not be cut back: remove the incomplete last line by hand"
    return UserError(f"--results_file {path}: the results line could not be written ({err.strerror or err}); "
                     f"{state}. The line is in the log above; free space or choose another --results_file")


def timestamp() -> str:
    """Now, as ISO 8601 with the local time zone and milliseconds (runs on several machines compare)."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --- reading ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """A line of a results file that was skipped, and why."""
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}; line skipped"


def read_results(path: str | os.PathLike) -> tuple[list[dict], list[Problem]]:
    """All well-formed records of one results file, in file order, and the lines that were not.

    A missing file is an empty one: a sweep that has not finished a run yet has no results file.
    """
    path = Path(path)
    if not path.exists():
        return [], []
    records: list[dict] = []
    problems: list[Problem] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            message = _check_line(raw)
            if message is None:
                records.append(json.loads(raw))
            elif message:
                problems.append(Problem(str(path), number, message))
    return records, problems


def _check_line(raw: bytes) -> str | None:
    """None for a good record, '' for a blank line (ignored), else what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not UTF-8 ({err.reason} at byte {err.start})"
    if not text.strip():
        return ""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        hint = " (a torn last line from a killed writer?)" if not text.endswith("\n") else ""
        return f"not valid JSON: {err.msg.removesuffix(' at')} at column {err.colno}{hint}"
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    missing = [name for name in IDENTITY_FIELDS if name not in record]
    if missing:
        return f"record lacks {', '.join(missing)}"
    if not isinstance(record.get("config", {}), dict):
        return "'config' is not an object"
    return None


# --- run identity -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _flag_defaults() -> dict:
    from run_utils import build_parser  # the flags' defaults are the CLI's

    return vars(build_parser().parse_args([]))


def comparable_config(config: dict) -> dict:
    """The flags of a run that decide what it computes, with today's defaults for flags it predates.

    Two runs are the same run exactly when these are equal. Filling defaults keeps older lines
    comparable after a flag is added; the bookkeeping flags are dropped, so moving the data or the
    results file does not make finished runs look unfinished.
    """
    merged = {**_flag_defaults(), **config}
    # JSON round trip, so a config from a fresh Namespace compares equal to the same one read back.
    return json.loads(json.dumps({k: v for k, v in merged.items() if k not in BOOKKEEPING_FLAGS},
                                 sort_keys=True))


def finished_configs(path: str | os.PathLike) -> tuple[list[dict], list[Problem]]:
    """The comparable configs of the runs a results file records, and its unreadable lines."""
    records, problems = read_results(path)
    return [comparable_config(r["config"]) for r in records if isinstance(r.get("config"), dict)], problems
