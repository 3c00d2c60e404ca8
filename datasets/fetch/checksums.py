"""Which MD5 a fetched file must have: the published one, or the one recorded on its first download.

Files without a published checksum (CoOp's split files on Google Drive, FGVC-Aircraft's archive, the
ImageNet variants) get theirs recorded in ROOT/.qlora-clip-fetch.lock.json the first time they are
downloaded, with the URL and the date; every later download of the same file into this root is
verified against it. Copying the lock file into another machine's root pins the same bytes there.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.utils import calculate_md5

from qlora_clip.errors import UserError

from .catalog import Remote

LOCK_FILE = ".qlora-clip-fetch.lock.json"
LOCK_VERSION = 1


@dataclass(frozen=True)
class Expected:
    """The MD5 a file must have and where that value comes from (said in a mismatch's message)."""
    md5: str
    origin: str


class LockFile:
    """ROOT/.qlora-clip-fetch.lock.json: {"version": 1, "files": {name: {"md5", "size", "url", "recorded"}}}."""

    def __init__(self, root: Path):
        self.path = root / LOCK_FILE
        self.files: dict[str, dict] = self._read()

    def _read(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        try:
            record = json.loads(self.path.read_text())
            files = record["files"]
            if record.get("version") != LOCK_VERSION or not isinstance(files, dict) or not all(
                    isinstance(entry, dict) and isinstance(entry.get("md5"), str) for entry in files.values()):
                raise ValueError("unexpected layout")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"{self.path}: not a readable checksum lock file ({err}); restore it, or delete it to "
                            "record the checksums anew on the next download") from None
        return files

    def expected(self, remote: Remote) -> Expected | None:
        if remote.md5:
            return Expected(remote.md5, "the published MD5")
        entry = self.files.get(remote.name)
        if entry is None:
            return None
        return Expected(entry["md5"], f"the MD5 recorded in {self.path} when it was first downloaded "
                                      f"({entry.get('recorded', '?')}, from {entry.get('url', '?')}); if the file "
                                      "changed upstream on purpose, delete its entry there and fetch again")

    def record(self, remote: Remote, md5: str, size: int, url: str) -> None:
        """Remember a first download's checksum; written at once, atomically, so a crash keeps it."""
        self.files[remote.name] = {"md5": md5, "size": size, "url": url,
                                   "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._write()

    def forget(self, remote: Remote) -> None:
        """Drop a recorded checksum (its file turned out not to be the published one)."""
        if self.files.pop(remote.name, None) is not None:
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"version": LOCK_VERSION, "files": self.files}, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path)


def md5_of(path: Path) -> str:
    return calculate_md5(path)
