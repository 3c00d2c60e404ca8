"""The caches' files (test images, frozen features, zero-shot accuracies): one atomic write, one clean-up rule.

Every cache entry is written by `atomic_file`: to a temporary file beside it, fsynced, then renamed
onto the entry, so no reader ever sees a partial one. The temporary file is named
`.<entry>.tmp-<host>-<pid>-<random>`, after the machine and the process that writes it, so that a
writer killed in the middle (one of CLIP-Adapter's augmented views of ImageNet is several GB) can be
recognised later: before each write, `remove_stale_temporaries` removes, in the entry's folder,

- any temporary file of a process of this machine that no longer runs (its pid is gone), and
- any temporary file last modified more than STALE_TEMPORARY_SECONDS ago, whoever wrote it (a writer
  on another machine sharing the folder, whose process cannot be checked, or a file of an older
  version named `.<entry>.<random>`): writing even ImageNet's 7.5 GB of test images takes minutes,
  and a file's modification time moves while it is written.

A live writer's file is never removed, so runs sharing a cache folder (a sweep on several GPUs)
never break each other's writes.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger(__name__)

STALE_TEMPORARY_SECONDS = 6 * 3600
# A temporary file of this naming in a cache folder, whichever entry it was for.
_TEMPORARY = re.compile(r"\..+\.tmp-(?P<host>.+)-(?P<pid>\d+)-[A-Za-z0-9_]+")


def temporary_prefix(path: Path) -> str:
    """The start of the temporary file's name for writing `path` from this process."""
    return f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-"


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO]:
    """An open temporary file beside `path`; once the block ends it is fsynced and renamed onto `path`. A failure
    (or an interrupt) removes it and is raised. The folder's leftovers of killed writers are removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path))
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files killed writers left in `path`'s folder (the module docstring's rule); return them.

    Any entry's files of this naming count (an entry may never be written again), and the older
    naming `.<entry>.<random>` for `path`'s own entry.
    """
    own = re.compile(re.escape(f".{path.name}.") + r"(tmp-(?P<host>.+)-(?P<pid>\d+)-[A-Za-z0-9_]+)?.*")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name) or own.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            status = entry.stat(follow_symlinks=False)
            if _writer_gone(match["host"], match["pid"]) or time.time() - status.st_mtime > STALE_TEMPORARY_SECONDS:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
                log.info("removed %s (%.2f GB), left by a cache writer that was killed", entry.path,
                         status.st_size / 1024 ** 3)
        except FileNotFoundError:  # its writer finished (renamed it) or another run removed it
            continue
    return removed


def _writer_gone(host: str | None, pid: str | None) -> bool:
    """Whether the process that named a temporary file is known to have ended (only on this machine)."""
    if host != socket.gethostname() or pid is None:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
