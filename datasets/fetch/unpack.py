"""An archive extracted into a temporary folder, and the folder the loader reads renamed into place.

The target appears in one rename, whole, or not at all: a run killed while extracting leaves only
the temporary folder (removed by the next run), never a half tree that check_data.py would read.
torchvision's extract_archive is not used: it extracts a tar without Python's "data" filter (an
archive from a mirror could then write outside the folder through absolute paths, `..` or links)
and shows no progress; the loop below does both, member by member.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from tqdm import tqdm

from qlora_clip.errors import UserError

from .transfer import FULL_DISK, DiskFull


class BadArchive(UserError):
    """An archive that does not extract, or lacks the folder a dataset needs from it."""


def staging_folder(work: Path, target: str) -> Path:
    """Where the archive for `target` is extracted before the rename (one folder per target)."""
    return work / ("unpack-" + target.replace("/", "--"))


def install_folder(archive: Path, work: Path, root: Path, target: str, take: str, inner: str = "") -> Path:
    """Extract `archive` (then its `inner` archive) and rename its folder `take` to root/target."""
    staging = staging_folder(work, target)
    if staging.exists():
        shutil.rmtree(staging)  # left by a run that was killed while extracting
    try:
        extract(archive, staging / "x")
        tree = staging / "x"
        if inner:
            nested = tree / inner
            if not nested.is_file():
                raise BadArchive(f"{archive.name}: has no {inner} inside ({_listing(tree, inner)})")
            extract(nested, staging / "y")
            tree = staging / "y"
        source = tree / take if take else tree
        if not source.is_dir():
            raise BadArchive(f"{(inner or archive.name)}: has no folder {take}/ ({_listing(tree, take)}); the "
                             "archive is not the published one")
        destination = root / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, destination)  # same file system (work lives under root): atomic
        return destination
    except OSError as err:
        if err.errno in FULL_DISK:
            raise DiskFull(f"{archive.name}: no space left on the device of {root} while extracting it (it needs "
                           "room for the archive and its extracted files at once); free space and run again: the "
                           f"downloaded archive {archive} is kept") from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def extract(archive: Path, into: Path) -> None:
    """Extract a .tar, .tar.gz, .tgz or .zip into `into`, with a progress bar over its members."""
    into.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as handle:
                members = handle.infolist()
                for member in tqdm(members, desc=f"extracting {archive.name}", unit="file", leave=False,
                                   disable=None):
                    _extract_member(handle, member, into)
        else:
            with tarfile.open(archive) as handle:  # "r:*": any compression
                for member in tqdm(handle, desc=f"extracting {archive.name}", unit="file", leave=False,
                                   disable=None):
                    _extract_member(handle, member, into)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise BadArchive(f"{archive}: does not extract ({type(err).__name__}: {err})") from None


def _extract_member(handle: tarfile.TarFile | zipfile.ZipFile, member, into: Path) -> None:
    if isinstance(handle, tarfile.TarFile):
        handle.extract(member, into, filter="data")  # refuses absolute paths, `..` and links leaving `into`
    else:
        handle.extract(member, into)  # zipfile drops absolute paths and `..` itself


def _listing(tree: Path, take: str, limit: int = 8) -> str:
    """What the extracted tree holds where `take` was expected: the deepest folder of its path that exists."""
    folder, shown_as = tree, "its top level"
    for part in Path(take).parts[:-1]:
        if not (folder / part).is_dir():
            break
        folder = folder / part
        shown_as = f"{folder.relative_to(tree).as_posix()}/"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    listed = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return f"{shown_as} holds {listed}" if names else f"{shown_as} is empty"
