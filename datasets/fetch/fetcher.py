"""One dataset end to end: which of its targets are missing, fetched, laid out; what cannot be, said.

A target already on disk is never touched (a user's copy is never overwritten); the caller
(check_data.py --download) fetches only datasets its check does not accept. Downloads and
extraction happen in ROOT/.qlora-clip-fetch/, which the loaders never read; an archive is deleted
once its folder is in place.
"""
from __future__ import annotations

import logging
import os
import shutil
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from qlora_clip.errors import UserError

from .catalog import CATALOG, Entry, Place, Remote
from .checksums import LockFile
from .transfer import FULL_DISK, DiskFull, SourcesExhausted, fetch_file
from .unpack import BadArchive, install_folder

log = logging.getLogger(__name__)

WORK_FOLDER = ".qlora-clip-fetch"
MIRROR_VARIABLE = "QLORA_CLIP_MIRROR"


@dataclass
class FetchOutcome:
    """What fetching one dataset did: targets put in place, targets left as they were, what failed and why."""
    dataset: str
    installed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def mirror_base(mirror: str | None) -> str | None:
    """--mirror, else $QLORA_CLIP_MIRROR: a lab's copy serving each file as BASE_URL/<published name>."""
    base = mirror if mirror is not None else os.environ.get(MIRROR_VARIABLE, "").strip() or None
    if base is None:
        return None
    where = "--mirror" if mirror is not None else MIRROR_VARIABLE
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise UserError(f"{where} {base}: give the http:// or https:// address of a folder that serves each file "
                        "under its published name (BASE_URL/dtd-r1.0.1.tar.gz)")
    return base.rstrip("/")


def sources(remote: Remote, mirror: str | None) -> list[str]:
    """The URLs tried for `remote`, in order: the mirror first, then the canonical source and public mirrors."""
    own = [f"{mirror}/{urllib.parse.quote(remote.name)}"] if mirror else []
    return own + list(remote.urls)


def fetch_dataset(name: str, root: Path, mirror: str | None = None,
                  catalog: dict[str, Entry] = CATALOG) -> FetchOutcome:
    """Fetch what dataset `name` lacks under `root` and lay it out where its loader reads it.

    Failures of one file (no source works, a checksum mismatch, a damaged archive, a full disk)
    become `problems` with the file, every URL tried and the manual steps; the other files are still
    fetched. Raises UserError only for bad input (the mirror URL, a damaged lock file).
    """
    entry = catalog[name]
    base = mirror_base(mirror)
    lock = LockFile(root)
    work = root / WORK_FOLDER
    outcome = FetchOutcome(name)
    for place in entry.places:
        if (root / place.target).exists():
            outcome.kept.append(place.target)
            continue
        try:
            _install(place, root, work, base, lock)
        except SourcesExhausted as err:
            outcome.problems.append(not_fetched_message(name, place, root, err.attempts, base))
        except DiskFull as err:
            outcome.problems.append(f"{name}: {err}")
            break  # the next files would not fit either
        except BadArchive as err:
            outcome.problems.append(f"{name}: {err}; {_by_hand(name, place, root, base)}")
        else:
            outcome.installed.append(place.target)
            log.info("%s: %s in place", name, root / place.target)
    if entry.by_hand:
        outcome.problems.append(f"{name}: {entry.by_hand.format(root=root)}")
    return outcome


def _install(place: Place, root: Path, work: Path, mirror: str | None, lock: LockFile) -> None:
    downloaded = fetch_file(place.remote, sources(place.remote, mirror), work, lock)
    if place.remote.is_archive:
        try:
            install_folder(downloaded, work, root, place.target, place.take, place.inner)
        except BadArchive as err:
            # Not the archive we expect: kept for a look, never extracted again, and its checksum, if it was
            # the first download's, forgotten so that the right file is not refused next time.
            aside = downloaded.with_name(downloaded.name + ".bad")
            downloaded.replace(aside)
            lock.forget(place.remote)
            raise BadArchive(f"{err}; it is kept aside as {aside} and not used") from None
        downloaded.unlink()  # the folder is in place; the archive would only double the space taken
    else:
        target = root / place.target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        try:
            shutil.copyfile(downloaded, tmp)
        except OSError as err:
            if err.errno in FULL_DISK:
                raise DiskFull(f"{place.remote.name}: no space left on the device of {target.parent}") from None
            raise
        tmp.replace(target)


def not_fetched_message(name: str, place: Place, root: Path, attempts: list[tuple[str, str]],
                        mirror: str | None) -> str:
    """The file, every URL tried with what happened, and the manual steps."""
    tried = "\n".join(f"  {url}: {why}" for url, why in attempts)
    return f"{name}: could not fetch {place.remote.name}; tried\n{tried}\n  {_by_hand(name, place, root, mirror)}"


def _by_hand(name: str, place: Place, root: Path, mirror: str | None) -> str:
    remote = place.remote
    where = f" (from {remote.page})" if remote.page else ""
    if not remote.is_archive:
        step = f"download {remote.name}{where} and save it as {root / place.target}"
    else:
        inside = f"{place.inner}, then its " if place.inner else ""
        step = (f"download {remote.name}{where}, extract it and move {inside}folder {place.take or '.'}/ "
                f"to {root / place.target}")
    serve = "" if mirror else f", or serve it as BASE_URL/{remote.name} and pass --mirror BASE_URL"
    return f"By hand: {step} (DATASETS.md#{name}){serve}; then run the same command again."
