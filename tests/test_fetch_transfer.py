"""datasets.fetch's transfers on a loopback server: sources in order, the mirror first, resuming,
checksums (published, recorded, mismatched), a full disk, a web page served in place of the file."""
from __future__ import annotations

import errno
import json

import pytest
from fetch_server import FileServer, md5, no_internet

from datasets.fetch import MIRROR_VARIABLE, Remote, transfer
from datasets.fetch.checksums import LOCK_FILE, LockFile
from datasets.fetch.fetcher import mirror_base, sources
from datasets.fetch.transfer import DiskFull, SourcesExhausted, fetch_file

NAME = "dtd-r1.0.1.tar.gz"
PAYLOAD = bytes(range(256)) * 2048  # 512 KiB


@pytest.fixture
def server(monkeypatch):
    no_internet(monkeypatch)
    monkeypatch.setattr(transfer, "BACKOFF_S", 0)
    monkeypatch.setattr(transfer, "CHUNK", 64 * 1024)  # several writes per file: a failure can land mid-file
    with FileServer() as running:
        yield running


def remote(server: FileServer, *paths: str, checksum: str | None = md5(PAYLOAD), name: str = NAME) -> Remote:
    return Remote(name, tuple(server.url(path) for path in paths), checksum)


def fetch(r: Remote, folder, lock_root=None):
    return fetch_file(r, list(r.urls), folder, LockFile(lock_root or folder))


def test_a_source_answering_404_gives_way_to_the_next_at_once(server, tmp_path):
    server.files[f"second/{NAME}"] = PAYLOAD
    path = fetch(remote(server, f"first/{NAME}", f"second/{NAME}"), tmp_path)
    assert path == tmp_path / NAME
    assert path.read_bytes() == PAYLOAD
    assert server.requested() == [f"first/{NAME}", f"second/{NAME}"]  # a 404 is not retried
    assert not (tmp_path / f"{NAME}.part").exists()


def test_a_mirror_is_tried_first_under_the_published_file_name(server, tmp_path, monkeypatch):
    r = remote(server, f"canonical/{NAME}")
    monkeypatch.setenv(MIRROR_VARIABLE, server.url("lab/"))
    assert sources(r, mirror_base(None)) == [server.url(f"lab/{NAME}"), server.url(f"canonical/{NAME}")]
    assert sources(r, mirror_base(server.url("flag")))[0] == server.url(f"flag/{NAME}")  # the flag beats the variable
    server.files[f"lab/{NAME}"] = PAYLOAD
    fetch_file(r, sources(r, mirror_base(None)), tmp_path, LockFile(tmp_path))
    assert server.requested() == [f"lab/{NAME}"]


def test_a_transfer_cut_short_is_resumed_from_where_it_stopped(server, tmp_path):
    server.files[NAME] = PAYLOAD
    server.cut_once[NAME] = 200_000
    assert fetch(remote(server, NAME), tmp_path).read_bytes() == PAYLOAD
    assert server.log == [(NAME, None), (NAME, "bytes=200000-")]


def test_a_partial_download_left_by_a_killed_run_is_resumed(server, tmp_path):
    server.files[NAME] = PAYLOAD
    (tmp_path / f"{NAME}.part").write_bytes(PAYLOAD[:300_000])
    assert fetch(remote(server, NAME), tmp_path).read_bytes() == PAYLOAD
    assert server.log == [(NAME, "bytes=300000-")]


def test_a_checksum_mismatch_keeps_the_file_aside_and_never_uses_it(server, tmp_path):
    server.files[NAME] = PAYLOAD
    with pytest.raises(SourcesExhausted) as caught:
        fetch(remote(server, NAME, checksum="0" * 32), tmp_path)
    (url, why), = caught.value.attempts
    aside = tmp_path / f"{NAME}.md5-{md5(PAYLOAD)}"
    assert url == server.url(NAME)
    assert "checksum mismatch" in why
    assert "published MD5" in why
    assert str(aside) in why
    assert aside.read_bytes() == PAYLOAD
    assert not (tmp_path / NAME).exists()
    assert not (tmp_path / f"{NAME}.part").exists()


def test_a_checksum_nobody_publishes_is_recorded_on_first_download_and_verified_after(server, tmp_path):
    split = "split_zhou_DescribableTextures.json"
    server.files[split] = b'{"train": []}'
    fetch(remote(server, split, checksum=None, name=split), tmp_path)
    recorded = json.loads((tmp_path / LOCK_FILE).read_text())["files"][split]
    assert recorded["md5"] == md5(b'{"train": []}')
    assert recorded["url"] == server.url(split)

    (tmp_path / split).unlink()
    server.files[split] = b'{"train": ["changed"]}'  # the source now serves other bytes
    with pytest.raises(SourcesExhausted, match=f"MD5 recorded in .*{LOCK_FILE}"):
        fetch(remote(server, split, checksum=None, name=split), tmp_path)
    assert not (tmp_path / split).exists()


def test_a_full_disk_stops_at_once_keeps_the_partial_file_and_resumes_later(server, tmp_path, monkeypatch):
    server.files[NAME] = PAYLOAD
    server.files[f"other/{NAME}"] = PAYLOAD
    writes = []

    def fills_up(out, chunk):
        if writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        writes.append(len(chunk))
        out.write(chunk)

    monkeypatch.setattr(transfer, "_write", fills_up)
    r = remote(server, NAME, f"other/{NAME}")
    with pytest.raises(DiskFull, match=r"no space left .* the partial download .*\.part is kept and resumes"):
        fetch(r, tmp_path)
    assert server.requested() == [NAME]  # another source would not make room
    assert (tmp_path / f"{NAME}.part").stat().st_size == writes[0]
    assert not (tmp_path / NAME).exists()

    monkeypatch.setattr(transfer, "_write", lambda out, chunk: out.write(chunk))  # space freed
    assert fetch(r, tmp_path).read_bytes() == PAYLOAD
    assert server.log[-1] == (NAME, f"bytes={writes[0]}-")


def test_a_web_page_served_in_place_of_the_file_is_refused(server, tmp_path):
    split = "split_zhou_EuroSAT.json"
    server.files[f"drive/{split}"] = b"unused"
    server.pages.add(f"drive/{split}")  # what Google Drive sends past a file's download quota
    server.files[f"copy/{split}"] = b'{"train": []}'
    with pytest.raises(SourcesExhausted, match="web page"):
        fetch(remote(server, f"drive/{split}", checksum=None, name=split), tmp_path)
    fetch(remote(server, f"drive/{split}", f"copy/{split}", checksum=None, name=split), tmp_path)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["files"][split]["md5"] == md5(b'{"train": []}')


def test_a_file_larger_than_the_free_space_is_refused_before_its_first_byte(server, tmp_path, monkeypatch):
    server.files[NAME] = PAYLOAD
    monkeypatch.setattr(transfer.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1000})())
    with pytest.raises(DiskFull, match=f"{len(PAYLOAD):,} bytes to download but only 1,000 free"):
        fetch(remote(server, NAME), tmp_path)
    assert not (tmp_path / f"{NAME}.part").exists()
