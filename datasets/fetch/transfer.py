"""One file over HTTP into a folder: resumed, retried, with a byte progress bar, verified, then renamed.

torchvision.datasets.utils.download_url writes straight to the final name, starts from zero on
every call and never retries: a transfer cut at 30 of SUN397's 37 GB starts over, and a file cut
short sits under its real name looking complete. What it lacks is written here with urllib (its
User-Agent and its MD5 helper are reused): the bytes go to NAME.part, a dropped connection is
retried and resumed with an HTTP Range request, and only a whole file with the expected checksum is
renamed to NAME. A file with the wrong checksum is kept aside under another name, never used.
"""
from __future__ import annotations

import errno
import http.client
import logging
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from torchvision.datasets.utils import USER_AGENT
from tqdm import tqdm

from qlora_clip.errors import UserError

from .catalog import Remote
from .checksums import LockFile, md5_of

log = logging.getLogger(__name__)

CHUNK = 1 << 20          # bytes read and written at a time
ATTEMPTS = 3             # tries per source for failures that may pass (a dropped connection, a timeout, a 5xx)
BACKOFF_S = 2.0          # wait before the n-th retry: BACKOFF_S * 2 ** (n - 1)
TIMEOUT_S = 60           # seconds without a byte before a connection counts as dropped
# Answers that mean the file is not to be had at this URL: the next source is tried at once.
NOT_HERE = frozenset({400, 401, 403, 404, 405, 410, 451})
FULL_DISK = frozenset({errno.ENOSPC, errno.EDQUOT})


class SourceFailed(Exception):
    """One URL did not give the file; `retry`: the failure may pass, so the same URL is tried again."""

    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.retry = retry


class SourcesExhausted(Exception):
    """No source gave the file; `attempts` holds (url, what happened) for each, in order."""

    def __init__(self, attempts: list[tuple[str, str]]):
        super().__init__("; ".join(f"{url}: {why}" for url, why in attempts))
        self.attempts = attempts


class DiskFull(UserError):
    """No room for a download or its extraction; the message says how much is needed and what was kept."""


def fetch_file(remote: Remote, sources: list[str], folder: Path, lock: LockFile) -> Path:
    """folder/<name>, whole and with the expected MD5, from the first of `sources` that serves it.

    A verified copy already in `folder` is used as it is. Raises SourcesExhausted when no source
    gives the right bytes, DiskFull when the disk fills up (the partial file is kept and resumes).
    """
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / remote.name
    part = folder / (remote.name + ".part")
    expected = lock.expected(remote)
    if dest.is_file():
        if expected is not None and md5_of(dest) == expected.md5:
            return dest
        dest.unlink()  # whole but unverifiable (no record) or wrong: fetched again
    attempts = []
    for url in sources:
        try:
            _fetch_with_retries(url, part, remote.name)
        except SourceFailed as err:
            attempts.append((url, str(err)))
            continue
        md5 = md5_of(part)
        if expected is not None and md5 != expected.md5:
            aside = folder / f"{remote.name}.md5-{md5}"
            part.replace(aside)
            attempts.append((url, f"checksum mismatch: MD5 {md5}, not {expected.md5} ({expected.origin}); "
                                  f"the file is kept aside as {aside} and not used"))
            continue
        size = part.stat().st_size
        part.replace(dest)
        if expected is None:
            lock.record(remote, md5, size, url)
            log.info("%s: MD5 %s recorded in %s (no published checksum)", remote.name, md5, lock.path)
        return dest
    raise SourcesExhausted(attempts)


def _fetch_with_retries(url: str, part: Path, name: str) -> None:
    for attempt in range(1, ATTEMPTS + 1):
        log.info("%s: fetching %s%s", name, url, f" (try {attempt} of {ATTEMPTS})" if attempt > 1 else "")
        try:
            _transfer(url, part, name)
            return
        except SourceFailed as err:
            if not err.retry:
                raise
            if attempt == ATTEMPTS:
                raise SourceFailed(f"{err} (gave up after {ATTEMPTS} tries)", retry=False) from None
            wait = BACKOFF_S * 2 ** (attempt - 1)
            log.warning("%s: %s from %s; trying again in %.0f s", name, err, url, wait)
            time.sleep(wait)


def _transfer(url: str, part: Path, name: str) -> None:
    """Append to `part` what it lacks of the file at `url` (all of it when the server cannot resume)."""
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            if _total_of(err.headers.get("Content-Range", "")) == have:
                return  # the partial file is the whole file: a run stopped between the last byte and the rename
            part.unlink()
            raise SourceFailed("the partial download is longer than the file; starting over", retry=True) from None
        raise SourceFailed(f"HTTP {err.code} {err.reason}", retry=err.code not in NOT_HERE) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise SourceFailed(f"connection failed ({getattr(err, 'reason', err)})", retry=True) from None
    with response:
        if "text/html" in response.headers.get("Content-Type", "") and not name.endswith((".html", ".htm")):
            # What Google Drive sends when a file's download quota is exceeded or it wants a confirmation.
            raise SourceFailed("answered with a web page, not the file (a quota or sign-in page?)", retry=False)
        start, total = _start_and_total(response, have, part, name)
        _room_for(part, start, total, name)
        try:
            with part.open("ab" if start else "wb") as out, tqdm(
                    total=total, initial=start, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                    leave=False, disable=None) as bar:
                while chunk := _read(response):
                    _write(out, chunk)
                    bar.update(len(chunk))
        except OSError as err:
            if err.errno in FULL_DISK:
                size = part.stat().st_size if part.is_file() else 0
                raise DiskFull(f"{name}: no space left on the device of {part.parent} after {size:,}"
                               f"{f' of {total:,}' if total else ''} bytes; free space and run again: the partial "
                               f"download {part} is kept and resumes") from None
            raise
    size = part.stat().st_size
    if total is not None and size < total:
        raise SourceFailed(f"the connection closed after {size:,} of {total:,} bytes", retry=True)
    if total is not None and size > total:
        part.unlink()
        raise SourceFailed(f"sent {size:,} bytes where it announced {total:,}", retry=True)


def _start_and_total(response, have: int, part: Path, name: str) -> tuple[int, int | None]:
    """Where this response's bytes start in the file, and the file's whole size when the server says."""
    if response.status == 206:
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if match is None or int(match[1]) != have:
            part.unlink()
            raise SourceFailed("answered a range that does not continue the partial download; starting over",
                               retry=True)
        return have, int(match[2]) if match[2] != "*" else None
    if have:
        log.info("%s: the server does not resume transfers; starting over", name)
    length = response.headers.get("Content-Length", "")
    return 0, int(length) if length.isdigit() else None


def _total_of(content_range: str) -> int | None:
    match = re.fullmatch(r"bytes \*/(\d+)", content_range.strip())
    return int(match[1]) if match else None


def _room_for(part: Path, start: int, total: int | None, name: str) -> None:
    """Refuse before the first byte when the rest of the file cannot fit, instead of after hours."""
    if total is None:
        return
    free = shutil.disk_usage(part.parent).free
    if total - start > free:
        raise DiskFull(f"{name}: {total - start:,} bytes to download but only {free:,} free on the device of "
                       f"{part.parent}; free space (or use another --root_path) and run again")


def _read(response) -> bytes:
    try:
        return response.read(CHUNK)
    except (OSError, http.client.HTTPException) as err:
        raise SourceFailed(f"the connection dropped ({err})", retry=True) from None


def _write(out: BinaryIO, chunk: bytes) -> None:
    out.write(chunk)
