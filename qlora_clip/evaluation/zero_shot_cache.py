"""A small keyed store of zero-shot accuracies, shared by a sweep's runs.

A zero-shot accuracy is the frozen base's on a test set: it does not depend on the adapter, so the
15 runs per dataset and method of the paper's grid (and every method on an unquantized base) need
it once, 50,000 test images each on ImageNet. This module only stores and verifies: the caller
gives a key dict saying everything the accuracy depends on (zero_shot_key.py) and a folder.

One JSON file per key, named by a digest of the key, holding the key itself, the accuracy, the
calibration sums of the same pass (calibration.CalibrationAccumulator.sums; entries written before
they were stored lack them) and a SHA-256 checksum of all of them. Written as every cache file is
(qlora_clip/cache_files.py: temporary file, fsync, rename; killed writers' leftovers removed), so a
reader never sees a partial entry; verified on every read, so a torn, edited or colliding entry is
reported and recomputed, never trusted. A failed write only loses the reuse: the run goes on.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

from qlora_clip.cache_files import atomic_file

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the entry layout changes


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def entry_path(folder: Path, key: dict) -> Path:
    """Where the entry of `key` lives in `folder`."""
    return folder / f"{hashlib.sha256(_canonical(key)).hexdigest()[:32]}.json"


def _checksum(key: dict, accuracy: float, calibration: list[float] | None = None) -> str:
    content = {"format": FORMAT, "key": key, "zero_shot_acc": accuracy}
    if calibration is not None:
        content["calibration_sums"] = calibration
    return hashlib.sha256(_canonical(content)).hexdigest()


def _as_stored(key: dict) -> dict:
    """`key` as it reads back from JSON (tuples become lists), so a stored key compares equal to it."""
    return json.loads(_canonical(key))


def read(folder: Path, key: dict) -> float | None:
    """The stored accuracy of `key`, or None when there is none or it does not verify (warned)."""
    entry = read_entry(folder, key)
    return entry["zero_shot_acc"] if entry is not None else None


def read_entry(folder: Path, key: dict) -> dict | None:
    """The stored entry of `key` ({"zero_shot_acc": float, "calibration_sums": list of floats or None}), or None
    when there is none or it does not verify (warned)."""
    key = _as_stored(key)
    path = entry_path(folder, key)
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
        accuracy = entry["zero_shot_acc"]
        if entry.get("format") != FORMAT or entry.get("key") != key:
            raise ValueError("it belongs to another key or format")
        if not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool) or not math.isfinite(accuracy):
            raise ValueError(f"its accuracy is {accuracy!r}")
        calibration = entry.get("calibration_sums")
        if calibration is not None and not (isinstance(calibration, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in calibration)):
            raise ValueError("its calibration sums are not a list of numbers")
        if entry.get("checksum") != _checksum(key, accuracy, calibration):
            raise ValueError("its checksum differs")
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("zero-shot cache entry %s is unusable (%s); computing the zero-shot accuracy again", path, err)
        return None
    return {"zero_shot_acc": float(accuracy), "calibration_sums": calibration}


def write(folder: Path, key: dict, accuracy: float, calibration: list[float] | None = None) -> None:
    """Store `accuracy` (and the pass's calibration sums) under `key`: temporary file, fsync, rename; a failure is
    logged, not raised."""
    key = _as_stored(key)
    path = entry_path(folder, key)
    entry = {"format": FORMAT, "key": key, "zero_shot_acc": accuracy, "checksum": _checksum(key, accuracy, calibration)}
    if calibration is not None:
        entry["calibration_sums"] = list(calibration)
    try:
        with atomic_file(path, "w") as f:
            f.write(json.dumps(entry, indent=1, sort_keys=True))
    except OSError as err:
        log.warning("could not store the zero-shot accuracy in %s (%s); later runs will compute it again",
                    folder, err)
