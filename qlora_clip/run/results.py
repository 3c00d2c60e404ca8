"""Results files: one JSON object per line, one line per run. Writing, reading, and run identity.

Everything that reads or writes results goes through here: main.py appends a line, the sweep
and `--resume` decide whether two runs are the same run, summarize.py reads lines into tables.
A line that is not a JSON object with the identifying fields, of their types, and finite numbers
where the summaries compute (accuracies, time, memory) is reported with its line number and
skipped, never silently dropped and never allowed to stop the reading of the lines after it.
"""
from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from qlora_clip.errors import UserError
from qlora_clip.methods.table import resolve_flags
from qlora_clip.run.settings import BOOKKEEPING_FLAGS, UNKEYED_DEFAULTS

log = logging.getLogger(__name__)

# The fields that say which run a line belongs to, and their types; a line without them cannot be
# placed in a table (and a string "4" for shots would sort against the integers and stop the tables).
IDENTITY_TYPES = {"mode": str, "dataset": str, "shots": int, "seed": int, "backbone": str}
IDENTITY_FIELDS = tuple(IDENTITY_TYPES)

# Numbers the summaries average or compare, each a finite number or null where a line has it:
# Python's json reads NaN and Infinity, and one of them would turn a whole average into nonsense.
NUMBER_FIELDS = ("zero_shot_acc", "test_acc", "base_acc", "new_acc", "hm_acc", "zero_shot_base_acc",
                 "zero_shot_new_acc", "zero_shot_hm_acc", "train_seconds", "total_steps", "peak_memory_mb",
                 "peak_memory_reserved_mb", "model_footprint_mb", "trainable_params")
# The same for each target of --eval_datasets: "eval_datasets": {"<name>": {"test_acc": ..., ...}}.
TARGET_NUMBER_FIELDS = ("test_acc", "zero_shot_acc")



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


def format_seconds(seconds: float, hour_digits: int = 1) -> str:
    """A duration as H:MM:SS, the hours zero-padded to `hour_digits` (2 lines up a table column)."""
    seconds = round(seconds)
    return f"{seconds // 3600:0{hour_digits}d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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
    return _type_problem(record)


def _type_problem(record: dict) -> str | None:
    """What is wrong with the type of an identity field or of a number the summaries use, if anything."""
    for name, kind in IDENTITY_TYPES.items():
        value = record[name]
        if not isinstance(value, kind) or isinstance(value, bool):  # true is an int to Python, not to us
            return f"'{name}' is {_shown(value)}, not {'an integer' if kind is int else 'a string'}"
    numbers = [(name, record[name]) for name in NUMBER_FIELDS if name in record]
    targets = record.get("eval_datasets") or {}
    if not isinstance(targets, dict) or not all(isinstance(fields, dict) for fields in targets.values()):
        return "'eval_datasets' is not an object of objects"
    numbers += [(f"eval_datasets.{target}.{name}", fields[name])
                for target, fields in targets.items() for name in TARGET_NUMBER_FIELDS if name in fields]
    for name, value in numbers:
        if not _finite_or_null(value):
            return f"'{name}' is {_shown(value)}, not a finite number or null"
    return None


def _finite_or_null(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return value is None or isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _shown(value: object) -> str:
    """A value as the line spells it (NaN, "4", true), cut short if long."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- run identity -------------------------------------------------------------------------------

def comparable_config(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict:
    """The flags of a run that decide what it computes, with `defaults` (main.py's, settings.flag_defaults)
    for flags it predates, and the method's values (methods.resolve_flags) for flags left to the method.

    Two runs are the same run exactly when these are equal. Filling defaults keeps older lines
    comparable after a flag is added (a line from before --lr defaulted to the method's value holds
    lr 0.0002, as a LoRA run at the defaults resolves to); the bookkeeping flags are dropped, so
    moving the data or the results file does not make finished runs look unfinished. `--root_path` is bookkeeping except
    for `--dataset folder`, where it is the dataset: two image folders are two datasets.
    """
    merged = resolve_flags({**defaults, **config})
    kept = {k: v for k, v in merged.items() if k not in BOOKKEEPING_FLAGS}
    if merged.get("dataset") == "folder":
        kept["root_path"] = str(Path(str(merged.get("root_path", ""))).expanduser().resolve())
    # JSON round trip, so a config from a fresh Namespace compares equal to the same one read back.
    kept = json.loads(json.dumps(kept, sort_keys=True))
    unkeyed = json.loads(json.dumps(UNKEYED_DEFAULTS))
    return {k: v for k, v in kept.items() if k not in unkeyed or v != unkeyed[k]}


def recorded_configs(path: str | os.PathLike, defaults: Mapping[str, Any]) -> tuple[list[dict], list[Problem]]:
    """The comparable configs of the runs a results file records, and its unreadable lines."""
    records, problems = read_results(path)
    return [comparable_config(r["config"], defaults) for r in records if isinstance(r.get("config"), dict)], problems
