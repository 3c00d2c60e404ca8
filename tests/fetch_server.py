"""A file server on the loopback address for the fetch tests, and the miniature archives it serves.

`FileServer` serves bytes by path over HTTP on 127.0.0.1 (http.server in a thread): Range requests
are answered 206 (416 past the end), paths it does not hold 404, and faults come on demand (a
transfer cut short once, a web page instead of the file). It logs every request's path and Range
header. `published_files` packs a miniature dataset of tests/dataset_trees.py into archives with the
published names and inner layout; `local_entry` points a catalog entry at the server; `no_internet`
makes any connection to another host fail, so no test can reach the internet.
"""
from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import urllib.parse
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dataset_trees as trees

from datasets import dataset_module
from qlora_clip.data.items import SplitSizes
from datasets.fetch import CATALOG, Entry


class FileServer:
    """`files` maps a URL path ("lab/dtd-r1.0.1.tar.gz") to its bytes; `log` holds (path, Range header)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: dict[str, int] = {}   # path -> bytes sent before the connection drops, the first time
        self.pages: set[str] = set()         # paths answered with an HTML page
        self.log: list[tuple[str, str | None]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{path}"

    def requested(self) -> list[str]:
        return [path for path, _ in self.log]


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
            wanted = self.headers.get("Range")
            server.log.append((path, wanted))
            body = server.files.get(path)
            if body is None:
                self.send_error(404)
                return
            if path in server.pages:
                self._send(200, b"<html>Google Drive - quota exceeded</html>", {"Content-Type": "text/html"})
                return
            start = int(wanted.removeprefix("bytes=").split("-")[0]) if wanted else 0
            if start >= len(body) and wanted:
                self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                return
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(body) - start)}
            if wanted:
                headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            cut = server.cut_once.pop(path, None)
            self._send(206 if wanted else 200, body[start:] if cut is None else body[start:start + cut], headers)

        def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(code)
            headers.setdefault("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)  # HTTP/1.0: the connection closes after it, cut short or not

        def log_message(self, *args) -> None:
            pass

    return Handler


def no_internet(monkeypatch) -> None:
    """Any connection to a host other than the loopback address fails (urllib connects through this)."""
    real = socket.create_connection

    def loopback_only(address, *args, **kwargs):
        if address[0] not in ("127.0.0.1", "localhost"):
            raise ConnectionRefusedError(f"the tests never reach the internet ({address[0]})")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", loopback_only)


# --- the published archives, in miniature ----------------------------------------------------------------

def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def tar_gz(members: dict[str, Path | bytes], compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as tar:
        for name, content in members.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_of(members: dict[str, Path | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content.read_bytes() if isinstance(content, Path) else content)
    return buffer.getvalue()


def _under(folder: Path, prefix: str) -> dict[str, Path]:
    return {f"{prefix}/{path.relative_to(folder).as_posix()}": path
            for path in sorted(folder.rglob("*")) if path.is_file()}


# The OOD sets' archives: the MOS authors' samples hold one folder of their name; Textures is DTD's own archive.
OOD_ARCHIVES = {"ood_inaturalist": ("iNaturalist.tar.gz", "iNaturalist"), "ood_sun": ("SUN.tar.gz", "SUN"),
                "ood_places": ("Places.tar.gz", "Places"), "ood_textures": ("dtd-r1.0.1.tar.gz", "dtd/images")}


def published_ood_files(name: str, staging: Path) -> tuple[dict[str, bytes], trees.OodTree]:
    """The archive `check_data.py --download name` fetches for an OOD set, built from a miniature one."""
    tree = trees.build_ood_set(name, staging)
    archive, folder = OOD_ARCHIVES[name]
    return {archive: tar_gz(_under(tree.folder, folder))}, tree


def published_files(name: str, staging: Path) -> tuple[dict[str, bytes], trees.Tree]:
    """The files `check_data.py --download name` fetches, by published name, built from a miniature tree."""
    tree = trees.build(name, staging)
    if name == "dtd":
        members = {**_under(tree.image_dir, "dtd/images"), "dtd/labels/labels_joint_anno.txt": b"banded\n"}
        files = {"dtd-r1.0.1.tar.gz": tar_gz(members)}
    elif name == "eurosat":
        files = {"EuroSAT.zip": zip_of(_under(tree.image_dir, "2750"))}
    elif name == "caltech101":  # a zip holding a tar.gz, as data.caltech.edu publishes it
        inner = tar_gz(_under(tree.image_dir, "101_ObjectCategories"))
        files = {"caltech-101.zip": zip_of({"caltech-101/101_ObjectCategories.tar.gz": inner,
                                            "caltech-101/Annotations.tar": tar_gz({}, compress=False),
                                            "caltech-101/show_annotation.m": b"% not read\n"})}
    elif name == "fgvc":
        folder = tree.image_dir.parent
        files = {"fgvc-aircraft-2013b.tar.gz": tar_gz({**_under(folder, "fgvc-aircraft-2013b/data"),
                                                       "fgvc-aircraft-2013b/README.html": b"<html></html>"})}
    else:
        raise ValueError(f"no miniature archive for {name}")
    if tree.split_file is not None and tree.split_file.suffix == ".json":
        files[tree.split_file.name] = tree.split_file.read_bytes()
    return files, tree


def local_entry(name: str, server: FileServer, files: dict[str, bytes], prefix: str = "") -> Entry:
    """CATALOG[name] with each file served by `server` under `prefix`; a published MD5 becomes the
    miniature's, a file without one stays without (its MD5 is then recorded on first download)."""
    entry = CATALOG[name]
    places = []
    for place in entry.places:
        remote = place.remote
        md5_value = md5(files[remote.name]) if remote.md5 else None
        places.append(replace(place, remote=replace(remote, urls=(server.url(prefix + remote.name),), md5=md5_value)))
    return replace(entry, places=tuple(places))


def serve(server: FileServer, files: dict[str, bytes], prefix: str = "") -> None:
    server.files.update({prefix + name: data for name, data in files.items()})


def pretend_published(monkeypatch, tree: trees.Tree) -> None:
    """The miniature's sizes as the dataset's published ones, so that a complete copy checks as ok."""
    monkeypatch.setattr(dataset_module(tree.name), "SIZES", SplitSizes(classes=len(tree.classnames), **tree.counts))
