"""`check_data.py --download` end to end on a loopback server serving miniature archives under the
published names: fetched, laid out, checked; and every failure ends in a message, a non-zero exit and
no tree the checker accepts."""
from __future__ import annotations

import errno
import json
import re

import dataset_trees as trees
import pytest
from fetch_server import (FileServer, local_entry, no_internet, pretend_published, published_files,
                          published_ood_files, serve, tar_gz)

import check_data
from datasets import build_dataset, dataset_module
from qlora_clip.data.items import SplitSizes
from datasets.fetch import CATALOG, WORK_FOLDER, fetch_dataset, transfer, unpack
from datasets.fetch.checksums import LOCK_FILE


@pytest.fixture
def server(monkeypatch):
    no_internet(monkeypatch)
    monkeypatch.setattr(transfer, "BACKOFF_S", 0)
    with FileServer() as running:
        yield running


def offer(monkeypatch, server, tmp_path, name: str) -> tuple[dict[str, bytes], trees.Tree]:
    """Serve the miniature `name` under its published file names and point the catalog at it."""
    files, tree = published_files(name, tmp_path / "staging" / name)
    serve(server, files)
    monkeypatch.setitem(CATALOG, name, local_entry(name, server, files))
    pretend_published(monkeypatch, tree)
    return files, tree


def download(root, *names: str, workers: str = "1") -> int:
    return check_data.main(["--download", *names, "--root_path", str(root), "--num_workers", workers])


def rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip() and "  " in line}


def test_one_command_fetches_lays_out_and_checks_a_tar_gz_a_zip_and_a_zip_holding_a_tar_gz(
        server, tmp_path, monkeypatch, capsys):
    for name in ("dtd", "eurosat", "caltech101"):
        offer(monkeypatch, server, tmp_path, name)
    root = tmp_path / "DATA"
    assert download(root, "dtd", "eurosat", "caltech101") == 0
    table = rows(capsys.readouterr().out)
    assert [table[name][:6] for name in ("dtd", "eurosat", "caltech101")] == [[name, "ok", "4", "24", "12", "8"] for
                                                                               name in ("dtd", "eurosat", "caltech101")]
    # CoOp's layout, exactly what the loaders read; the archives are gone once unpacked.
    assert (root / "dtd/images/banded").is_dir()
    assert (root / "dtd/split_zhou_DescribableTextures.json").is_file()
    assert (root / "eurosat/2750/AnnualCrop").is_dir()
    assert (root / "caltech-101/101_ObjectCategories").is_dir()
    assert not (root / "dtd/labels").exists()  # only the folder the loader reads is taken from the archive
    assert not list((root / WORK_FOLDER).glob("*.zip"))
    assert not list((root / WORK_FOLDER).glob("*.tar.gz"))
    # The split files have no published checksum: theirs are recorded; the archives' are published.
    locked = json.loads((root / LOCK_FILE).read_text())["files"]
    assert sorted(locked) == ["split_zhou_Caltech101.json", "split_zhou_DescribableTextures.json",
                              "split_zhou_EuroSAT.json"]
    assert len(build_dataset("dtd", root, shots=2, seed=1).train) == 8  # 4 classes x 2 shots: main.py's factory reads the result


def test_a_dataset_already_present_is_not_fetched_again(server, tmp_path, monkeypatch, capsys):
    offer(monkeypatch, server, tmp_path, "dtd")
    root = tmp_path / "DATA"
    trees.build("dtd", root)
    assert download(root, "dtd") == 0
    assert server.log == []
    assert not (root / WORK_FOLDER).exists()
    assert rows(capsys.readouterr().out)["dtd"][1] == "ok"


def test_a_kill_during_extraction_leaves_no_tree_and_the_next_run_completes(server, tmp_path, monkeypatch):
    offer(monkeypatch, server, tmp_path, "dtd")
    root = tmp_path / "DATA"
    extract_member = unpack._extract_member
    calls = []

    def killed(handle, member, into):
        calls.append(member)
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C, or any death, half way through the archive
        extract_member(handle, member, into)

    monkeypatch.setattr(unpack, "_extract_member", killed)
    with pytest.raises(KeyboardInterrupt):
        download(root, "dtd")
    assert not (root / "dtd/images").exists()
    assert check_data.check_dataset("dtd", root, workers=1).status == "not found"

    monkeypatch.setattr(unpack, "_extract_member", extract_member)
    # What a SIGKILL leaves (no clean-up ran): a half-extracted temporary tree.
    leftover = unpack.staging_folder(root / WORK_FOLDER, "dtd/images") / "x/dtd/images/banded"
    leftover.mkdir(parents=True)
    (leftover / "half.jpg").write_bytes(b"\xff\xd8")
    assert download(root, "dtd") == 0
    assert server.requested().count("dtd-r1.0.1.tar.gz") == 1  # the verified archive was kept, not fetched again
    assert not (root / "dtd/images/banded/half.jpg").exists()
    assert not unpack.staging_folder(root / WORK_FOLDER, "dtd/images").exists()


def test_a_checksum_mismatch_fails_keeps_the_file_aside_and_lays_out_nothing(server, tmp_path, monkeypatch, capsys):
    files, _ = offer(monkeypatch, server, tmp_path, "eurosat")
    server.files["EuroSAT.zip"] = files["EuroSAT.zip"][:-100] + bytes(100)  # not the published bytes
    root = tmp_path / "DATA"
    assert download(root, "eurosat") == 1
    out = capsys.readouterr().out
    assert rows(out)["eurosat"][1:3] == ["not", "found"]
    assert re.search(r"could not fetch EuroSAT\.zip; tried\n  http://127\.0\.0\.1:\d+/EuroSAT\.zip: checksum mismatch",
                     out), out
    assert "kept aside as" in out
    assert "By hand: download EuroSAT.zip" in out
    assert len(list((root / WORK_FOLDER).glob("EuroSAT.zip.md5-*"))) == 1
    assert not (root / "eurosat/2750").exists()


def test_a_full_disk_ends_in_a_message_and_no_tree(server, tmp_path, monkeypatch, capsys):
    offer(monkeypatch, server, tmp_path, "dtd")

    def full(out, chunk):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transfer, "_write", full)
    root = tmp_path / "DATA"
    assert download(root, "dtd") == 1
    out = capsys.readouterr().out
    assert "dtd: split_zhou_DescribableTextures.json: no space left on the device" in out
    assert not (root / "dtd").exists()


def test_a_full_disk_while_extracting_keeps_the_archive_and_lays_out_nothing(server, tmp_path, monkeypatch):
    offer(monkeypatch, server, tmp_path, "eurosat")

    def full(handle, member, into):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(unpack, "_extract_member", full)
    root = tmp_path / "DATA"
    outcome = fetch_dataset("eurosat", root)
    assert outcome.installed == ["eurosat/split_zhou_EuroSAT.json"]
    assert len(outcome.problems) == 1
    assert "EuroSAT.zip: no space left" in outcome.problems[0]
    assert "while extracting" in outcome.problems[0]
    assert (root / WORK_FOLDER / "EuroSAT.zip").is_file()
    assert not (root / "eurosat/2750").exists()
    assert not unpack.staging_folder(root / WORK_FOLDER, "eurosat/2750").exists()


def test_an_archive_without_the_expected_folder_is_set_aside(server, tmp_path, monkeypatch):
    wrong = {"fgvc-aircraft-2013b.tar.gz": tar_gz({"fgvc-aircraft-2013b/README.html": b"<html></html>",
                                                   "fgvc-aircraft-2013b/evaluation.m": b"%"})}
    serve(server, wrong)
    monkeypatch.setitem(CATALOG, "fgvc", local_entry("fgvc", server, wrong))
    root = tmp_path / "DATA"
    outcome = fetch_dataset("fgvc", root)
    problem, = outcome.problems
    assert "has no folder fgvc-aircraft-2013b/data/" in problem
    assert "README.html" in problem
    assert "kept aside as" in problem
    assert (root / WORK_FOLDER / "fgvc-aircraft-2013b.tar.gz.bad").is_file()
    assert not (root / "fgvc_aircraft").exists()
    # Its checksum, recorded on download, is forgotten: the right archive is accepted next time.
    offer(monkeypatch, server, tmp_path, "fgvc")
    assert fetch_dataset("fgvc", root).installed == ["fgvc_aircraft"]
    assert check_data.check_dataset("fgvc", root, workers=1).ok


def test_a_dead_link_without_a_mirror_names_the_file_every_url_tried_and_the_manual_steps(
        server, tmp_path, monkeypatch, capsys):
    # The real entry: its URLs are refused here as the dead hosts would (no_internet), after the retries.
    root = tmp_path / "DATA"
    assert download(root, "stanford_cars") == 1
    out = capsys.readouterr().out
    assert rows(out)["stanford_cars"][1:3] == ["not", "found"]
    for part in ("cars_train", "cars_test"):
        assert (f"stanford_cars: could not fetch {part}.tgz; tried\n"
                f"  http://ai.stanford.edu/~jkrause/car196/{part}.tgz: connection failed") in out
        assert f"move folder {part}/ to {root / 'stanford_cars' / part} (DATASETS.md#stanford_cars)" in out
    assert "gave up after 3 tries" in out
    assert "--mirror BASE_URL" in out
    assert not (root / "stanford_cars").exists()


def test_imagenet_fetches_its_class_names_and_says_how_to_get_the_images(server, tmp_path, monkeypatch, capsys):
    files = {"classnames.txt": b"n01440764 tench\n"}
    serve(server, files)
    monkeypatch.setitem(CATALOG, "imagenet", local_entry("imagenet", server, files))
    root = tmp_path / "DATA"
    assert download(root, "imagenet") == 1
    out = capsys.readouterr().out
    assert "licence" in out
    assert "https://image-net.org" in out
    assert f"{root}/imagenet/images/train/<wnid>" in out
    assert (root / "imagenet/classnames.txt").read_bytes() == files["classnames.txt"]


def test_the_ood_sets_are_fetched_into_mcms_layout_and_textures_not_when_dtd_is_there(server, tmp_path,
                                                                                        monkeypatch, capsys):
    from datasets import build_eval_images

    root = tmp_path / "DATA"
    for name in ("ood_inaturalist", "ood_textures"):
        files, tree = published_ood_files(name, tmp_path / "staging" / name)
        serve(server, files)
        monkeypatch.setitem(CATALOG, name, local_entry(name, server, files))
        monkeypatch.setattr(dataset_module(name), "SIZES", SplitSizes(classes=1, train=0, val=0, test=len(tree.images)))
    assert download(root, "ood_inaturalist", "ood_textures") == 0
    table = rows(capsys.readouterr().out)
    assert [table[name][:3] for name in ("ood_inaturalist", "ood_textures")] == [[name, "ok", "1"] for name in
                                                                                 ("ood_inaturalist", "ood_textures")]
    assert (root / "ImageNet_OOD_dataset/iNaturalist/images").is_dir()
    assert (root / "ImageNet_OOD_dataset/dtd/images/images").is_dir()
    assert len(build_eval_images("ood_inaturalist", root).test) == 3  # what --ood_datasets reads
    # MOS's samples have no published checksum: recorded on the first download.
    assert sorted(json.loads((root / LOCK_FILE).read_text())["files"]) == ["iNaturalist.tar.gz"]

    # With the dtd benchmark's images there, Textures is already on disk (ood_textures reads DATA/dtd/images too).
    server.log.clear()
    other = tmp_path / "OTHER"
    dtd = trees.build("dtd", other)
    monkeypatch.setattr(dataset_module("ood_textures"), "SIZES",
                        SplitSizes(classes=1, train=0, val=0, test=sum(dtd.counts.values())))  # all of DTD
    assert download(other, "ood_textures") == 0
    assert server.log == []


@pytest.mark.parametrize("argv, message", [
    (["--download", "fashion_mnist"], "nothing to fetch for it"),
    (["--download", "dtd", "--datasets", "dtd"], "leave out --datasets"),
    (["--mirror", "http://lab/data"], "use it with --download"),
    (["--download", "dtd", "--mirror", "ftp://lab/data"], "http:// or https://"),
])
def test_download_flags_are_checked_before_anything_is_fetched(server, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as caught:
        check_data.main([*argv, "--root_path", str(tmp_path)])
    assert caught.value.code == 2
    assert message in capsys.readouterr().err
    assert server.log == []
