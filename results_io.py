"""Reading results files (one JSON object per line, written by `run_utils.append_jsonl`).

The sweep and the summarizer read through `read_results`, so both agree on which lines count:
a line that is not a JSON object with the identifying fields is reported with its line number
and skipped, never silently dropped and never allowed to stop the reading of the lines after it.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from run_utils import BOOKKEEPING_FLAGS

# The fields that say which run a line belongs to; a line without them cannot be placed in a table.
IDENTITY_FIELDS = ("mode", "dataset", "shots", "seed", "backbone")


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


@functools.lru_cache(maxsize=1)
def _flag_defaults() -> dict:
    from run_utils import build_parser  # brings torch; only imported once a config is compared

    return vars(build_parser().parse_args([]))


def comparable_config(config: dict) -> dict:
    """The flags of a run that decide what it measures, with today's defaults for flags it predates.

    Filling defaults keeps older lines comparable after a flag is added; the bookkeeping flags are
    dropped, so moving the data or the results file does not make finished runs look unfinished.
    """
    merged = {**_flag_defaults(), **config}
    # JSON round trip, so a config from a fresh Namespace compares equal to the same one read back.
    return json.loads(json.dumps({k: v for k, v in merged.items() if k not in BOOKKEEPING_FLAGS},
                                 sort_keys=True))
