"""check_data.py on miniature datasets: what it finds, what it prints, its exit code, --write_split."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import dataset_trees as trees
import pytest

import check_data
from datasets import DATASET_NAMES, build_dataset, dataset_module
from qlora_clip.data.items import SplitSizes
from datasets.splits import MissingImages

REPO = Path(__file__).resolve().parent.parent


def pretend_published(monkeypatch, tree: trees.Tree) -> None:
    """Make the miniature's sizes the dataset's published ones, so a complete copy checks as ok."""
    sizes = SplitSizes(classes=len(tree.classnames), **tree.counts)
    monkeypatch.setattr(dataset_module(tree.name), "SIZES", sizes)


@pytest.mark.parametrize("convention", trees.CONVENTIONS)
@pytest.mark.parametrize("name", trees.BENCHMARKS)
def test_a_complete_dataset_checks_ok_under_either_folder_name(tmp_path, monkeypatch, capsys, name, convention):
    tree = trees.build(name, tmp_path, convention)
    pretend_published(monkeypatch, tree)
    assert check_data.main(["--root_path", str(tmp_path), "--dataset", name, "--workers", "1"]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[:2] == [name, "ok"]
    assert row[2:6] == [str(len(tree.classnames)), str(tree.counts["train"]), str(tree.counts["val"]),
                        str(tree.counts["test"])]


def test_missing_and_corrupt_images_are_listed_and_fail_the_check(tmp_path, monkeypatch, capsys):
    tree = trees.build("dtd", tmp_path)
    pretend_published(monkeypatch, tree)
    entries = tree.entries["test"]
    missing = [tree.image_dir / path for path, _ in entries[:2]]
    truncated, garbage = (tree.image_dir / path for path, _ in entries[2:4])
    for path in missing:
        path.unlink()
    truncated.write_bytes(truncated.read_bytes()[:200])  # a download cut short
    garbage.write_bytes(b"<html>not found</html>")       # an error page saved as an image
    # The loader stops a run, naming the missing images; the checker goes on and lists all problems.
    with pytest.raises(MissingImages, match=r"2 image\(s\) listed in .* are missing"):
        build_dataset("dtd", tmp_path, shots=1, seed=1)
    report = check_data.check_dataset("dtd", tmp_path, workers=2)  # decoded in worker processes
    assert report.status == "missing images"
    assert not report.ok
    assert sorted(report.missing) == sorted(map(str, missing))
    assert sorted(path for path, _ in report.corrupt) == sorted([str(truncated), str(garbage)])
    assert report.counts == {"classes": 4, "train": 24, "val": 12, "test": 8}  # what the split lists

    assert check_data.main(["--root_path", str(tmp_path), "--dataset", "dtd", "--examples", "1"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^dtd\s+missing images\s+4\s+24\s+12\s+8\s+2\s+2$", out, re.M), out
    assert "dtd: 2 listed image(s) missing, e.g." in out
    assert "dtd: 2 image(s) do not decode, e.g." in out
    listed = [line.strip().split("  (")[0] for line in out.splitlines() if line.startswith("  ")]
    assert len(listed) == 2
    assert listed[0] in map(str, missing)
    assert listed[1] in (str(truncated), str(garbage))

    # The command line exits non-zero too (in a fresh process the published counts differ as well).
    result = subprocess.run([sys.executable, "check_data.py", "--root_path", str(tmp_path), "--dataset", "dtd"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "dtd: 2 listed image(s) missing" in result.stdout


def test_absent_dataset_unreadable_split_and_wrong_counts_each_fail(tmp_path, capsys):
    trees.build("dtd", tmp_path)  # complete, but a miniature: its counts are not the published ones
    caltech = trees.build("caltech101", tmp_path)
    caltech.split_file.write_text("{\"train\": [")
    code = check_data.main(["--root_path", str(tmp_path), "--dataset", "dtd", "caltech101", "eurosat",
                            "--workers", "1"])
    out = capsys.readouterr().out
    assert code == 1
    rows = {line.split()[0]: line for line in out.splitlines()[2:5]}
    assert rows["dtd"].split()[1:3] == ["wrong", "counts"]
    assert "24 (expected 2,820)" in rows["dtd"]
    assert rows["caltech101"].split()[1:3] == ["bad", "split"]
    assert rows["eurosat"].split()[1:3] == ["not", "found"]
    assert f"{caltech.split_file}: not a readable split json" in out
    assert f"{tmp_path / 'eurosat' / '2750'} not found (also looked for {tmp_path / 'EuroSAT' / '2750'})" in out


def test_default_is_the_eleven_benchmarks():
    args = check_data.parse_args([])
    assert len(args.datasets) == 11
    assert "folder" not in args.datasets
    assert "fashion_mnist" not in args.datasets


def published_table() -> dict[str, SplitSizes]:
    """DATASETS.md's tables: benchmarks `| [name](#name) | ... | classes | train | val | test |`, and the
    test-only variants `| [name](#name) | folder | classes | test images | labels |`."""
    sizes = {}
    number = lambda cell: 0 if cell == "drawn from train" else int(cell.replace(",", ""))  # noqa: E731
    for line in (REPO / "DATASETS.md").read_text().splitlines():
        match = re.match(r"\| \[(\w+)\]\(#\1\) \|", line)
        if match:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if len(cells) == 8:
                sizes[match.group(1)] = SplitSizes(*map(number, cells[-4:]))
            else:
                sizes[match.group(1)] = SplitSizes(number(cells[2]), 0, 0, number(cells[3]))
    return sizes


def test_datasets_md_table_matches_the_counts_the_checker_uses():
    table = published_table()
    assert sorted(table) == sorted(trees.BENCHMARKS + ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"])
    for name in DATASET_NAMES:
        sizes = getattr(dataset_module(name), "SIZES", None)
        if name in table:
            assert sizes == table[name], name
    assert dataset_module("fashion_mnist").SIZES == SplitSizes(classes=10, train=50_000, val=10_000, test=10_000)


# --- an own dataset: --write_split --------------------------------------------------------------

def test_write_split_pins_an_own_folders_split(tmp_path):
    root = tmp_path / "mine"
    trees.write_folder_classes(root, {"cat": 10, "dog": 10, "owl": 10})
    (root / "classnames.txt").write_text("owl snowy owl\n")
    before = build_dataset("folder", root, shots=2, seed=3)
    assert check_data.main(["--root_path", str(root), "--dataset", "folder", "--write_split", "--workers", "1"]) == 0
    record = json.loads((root / "split.json").read_text())
    assert {part: len(entries) for part, entries in record.items()} == {"train": 15, "val": 6, "test": 9}
    assert record["test"][0][0].count("/") == 1
    assert not Path(record["test"][0][0]).is_absolute()

    after = build_dataset("folder", root, shots=2, seed=3)
    # The same split and the same few-shot draw.
    assert (after.train, after.val, after.test) == (before.train, before.val, before.test)
    assert after.classnames == before.classnames == ["cat", "dog", "snowy owl"]  # classnames.txt still applies
    # Images added later no longer move others into or out of the test set.
    trees.write_folder_classes(tmp_path / "more", {"cat": 12})
    (tmp_path / "more" / "cat" / "011.png").rename(root / "cat" / "new.png")
    assert build_dataset("folder", root, shots=2, seed=3).test == before.test


def test_write_split_of_train_and_test_folders_keeps_drawing_val_from_train(tmp_path):
    root = tmp_path / "mine"
    trees.write_folder_classes(root / "train", {"cat": 6, "dog": 6})
    trees.write_folder_classes(root / "test", {"cat": 2, "dog": 2})
    before = build_dataset("folder", root, shots=2, seed=5)
    check_data.write_split(root)
    after = build_dataset("folder", root, shots=2, seed=5)
    assert json.loads((root / "split.json").read_text())["val"] == []
    assert (after.train, after.val, after.test) == (before.train, before.val, before.test)
    assert len(after.val) == 4


def test_write_split_refuses_to_overwrite_or_to_touch_a_benchmark(tmp_path, capsys):
    root = tmp_path / "mine"
    trees.write_folder_classes(root, {"cat": 4, "dog": 4})
    (root / "split.json").write_text("{}")
    result = subprocess.run([sys.executable, "check_data.py", "--root_path", str(root), "--dataset", "folder",
                             "--write_split"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "split.json already fixes the split" in result.stderr
    with pytest.raises(SystemExit):
        check_data.parse_args(["--dataset", "dtd", "--write_split"])
    assert "--write_split" in capsys.readouterr().err


# --- our draws in 2SFS's format: --write_2sfs ------------------------------------------------------------------

def test_write_2sfs_exports_our_draws_and_split_file_reads_them_back_to_the_same_subset(tmp_path, monkeypatch, capsys):
    from datasets import write_subset
    from datasets.split_files import read_split_file, split_file_anchors

    monkeypatch.chdir(tmp_path)
    trees.build("dtd", Path("DATA"))
    trees.build("imagenet", Path("DATA"))
    subsets = []
    for name, shots, seed in (("dtd", 2, 3), ("imagenet", 2, 1)):
        ours = build_dataset(name, "DATA", shots=shots, seed=seed)
        subsets.append((ours, tmp_path / "results" / "subsets" / f"{name}_{shots}shots_seed{seed}.json"))
        write_subset(ours, subsets[-1][1])
    assert check_data.main(["--write_2sfs", *(str(path) for _, path in subsets), "--out", "exported"]) == 0
    assert "written exported/dtd/split_fewshot/shot_2-seed_3_train.jsonl" in capsys.readouterr().out
    for ours, _ in subsets:
        # 2SFS's tree: <data root>/<dataset folder>/split_fewshot/, here under --out.
        folder = tmp_path / "exported" / ours.name / "split_fewshot"  # CoOp's folder names: dtd, imagenet
        again = build_dataset(ours.name, "DATA", shots=2, seed=ours.seed,
                              split_file=folder / f"shot_2-seed_{ours.seed}_train.jsonl")
        assert again.train == ours.train
        assert again.val == ours.val  # the val file too, also ImageNet's (drawn from train with the train shots)

    # --image_root: the paths as they will be on the machine that reads the files; the same images.
    assert check_data.main(["--write_2sfs", str(subsets[0][1]), "--out", "there", "--image_root", "/data/lab"]) == 0
    there = tmp_path / "there" / "dtd" / "split_fewshot" / "shot_2-seed_3_train.jsonl"
    assert json.loads(there.read_text().splitlines()[0])["_impath"].startswith("/data/lab/dtd/images/")
    anchors = split_file_anchors(dataset_module("dtd"), "DATA")
    assert read_split_file(there, anchors).pairs("train") == [
        (str(Path(item.source).relative_to("DATA/dtd/images")), item.label) for item in subsets[0][0].train]


@pytest.mark.parametrize("argv, says", [
    (["--write_2sfs", "s.json"], "--write_2sfs needs --out DIR"),
    (["--write_2sfs", "s.json", "--out", "x", "--download", "dtd"], "leave out --download"),
    (["--out", "x"], "--out and --image_root go with --write_2sfs"),
])
def test_write_2sfs_flags_are_checked(argv, says, capsys):
    with pytest.raises(SystemExit):
        check_data.parse_args(argv)
    assert says in capsys.readouterr().err
