"""Where a run writes, checked before anything loads: a run must not train for an hour and then fail
to save what it computed. No torch here, so the flag checks stay cheap."""
from __future__ import annotations

import os
from pathlib import Path

# What marks a folder as a model checkpoint (a previous export): only such a folder is replaced by
# --overwrite_export, so a mistyped --merge_export (".", a home folder) is never emptied.
MODEL_MARKER = "config.json"


def location_error(flag: str, path: Path, kind: str) -> str | None:
    """Why the run could not write `path`, a "file" or a "folder" it creates if needed; None if it can."""
    if path.exists():
        if kind == "file" and path.is_dir():
            return f"{flag} {path} is a folder; give the path of a file (e.g. {path / 'results.jsonl'})"
        if kind == "folder" and not path.is_dir():
            return f"{flag}: {path} is a file, not a folder; give a folder path, or move the file away"
        if not os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0)):
            return f"{flag}: {path} is not writable; fix its permissions or choose another location"
        return None
    ancestor = nearest_existing(path)
    if not ancestor.is_dir():
        return f"{flag}: {ancestor} is a file, so {path} cannot be created under it; choose another location"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{flag}: {path} cannot be created, {ancestor} is not writable; choose another location"
    return None


def nearest_existing(path: Path) -> Path:
    """`path` or its nearest ancestor that exists (as a file or a folder)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def export_target_error(folder: Path, overwrite: bool, backbone: Path | None = None) -> str | None:
    """Why --merge_export may not write `folder`, or None.

    Never the backbone's own folder, a folder inside it or one holding it: the export is made from
    those files and would replace them. A folder with files only with --overwrite_export, and then
    only a model folder (one with config.json), which is replaced as a whole.
    """
    if backbone is not None:
        target, base = Path(os.path.realpath(folder)), Path(os.path.realpath(backbone))
        if target == base or base in target.parents or target in base.parents:
            return (f"--merge_export {folder} is, holds or lies inside the --backbone folder {backbone}, whose "
                    "files the export is made from; choose a folder elsewhere")
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    if not overwrite:
        return (f"--merge_export {folder} is not empty; choose a new or empty folder, or pass --overwrite_export "
                "to replace the model in it")
    if not (folder / MODEL_MARKER).is_file():
        return (f"--merge_export {folder} holds files but no {MODEL_MARKER}, so it is not a model folder; "
                "--overwrite_export only replaces a previous export: choose a new or empty folder")
    return None
