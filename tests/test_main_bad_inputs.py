"""Bad inputs stop a run with one line naming the file or flag and what to do (exit 2), never a
traceback, and never a run that goes on to a meaningless number."""
from __future__ import annotations

import gzip
import json
import re
import shutil
import sys
from pathlib import Path

import dataset_trees as trees
import numpy as np
import pytest
import torch
from PIL import Image

import check_data
import main
from datasets import build_dataset
from qlora_clip.data import images as base
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.errors import UserError
from qlora_clip.backbones.tiny_clip import tiny_checkpoint_dir

CPU = torch.device("cpu")


def cli_error(argv: list[str], monkeypatch, capsys) -> str:
    """Run main.py's command line in this process; assert exit 2 and a one-line message; return it."""
    monkeypatch.setattr(sys, "argv", ["main.py", *argv])
    code = main.cli()
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def no_evaluation(monkeypatch) -> None:
    monkeypatch.setattr(main.Evaluator, "zero_shot", lambda *a, **k: pytest.fail("the run reached zero-shot"))


# --- the backbone folder ----------------------------------------------------------------------------

def tiny_copy(tmp_path: Path, without: tuple[str, ...] = ()) -> Path:
    folder = tmp_path / "my-clip"
    shutil.copytree(tiny_checkpoint_dir(), folder, ignore=shutil.ignore_patterns(*without))
    return folder


def test_a_backbone_folder_without_tokenizer_files_stops_before_evaluating(tiny_argv, tmp_path, monkeypatch,
                                                                          capsys):
    folder = tiny_copy(tmp_path, without=("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                                          "special_tokens_map.json"))
    no_evaluation(monkeypatch)
    with pytest.raises(UserError, match=rf"--backbone {folder}: no usable tokenizer .*vocab.json and merges.txt"):
        main.main(tiny_argv("--backbone", str(folder)))
    message = cli_error(tiny_argv("--backbone", str(folder)), monkeypatch, capsys)
    assert str(folder) in message
    assert "tokenizer.json" in message


def test_prompts_the_same_in_clips_context_are_refused():
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_checkpoint_dir())
    long = "a photo of a " + "very " * 20
    with pytest.raises(UserError, match="the same in their first 77 tokens"):
        ClassPrompts(tokenizer, [long + "big cat.", long + "big dog."], CPU)
    ClassPrompts(tokenizer, ["a photo of a crane.", "a photo of a crane.", "a photo of a dog."], CPU)  # as ImageNet


@pytest.mark.parametrize("damage, says", [
    ("truncated weights", "the weights in .* cannot be read"),
    ("no preprocessor_config.json", "has no preprocessor_config.json"),
    ("a BERT config.json", "a 'bert' checkpoint without both a text and a vision tower .*Supported: CLIP"),
    ("a vision-only ViT config.json", "a 'vit' checkpoint without both a text and a vision tower .*Supported: CLIP"),
])
def test_a_broken_backbone_folder_is_named(damage, says, tiny_argv, tmp_path, monkeypatch, capsys):
    folder = tiny_copy(tmp_path)
    if damage == "truncated weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:5000])
    elif damage == "no preprocessor_config.json":
        (folder / "preprocessor_config.json").unlink()
    else:
        model_type = "bert" if "BERT" in damage else "vit"
        (folder / "config.json").write_text(json.dumps({"model_type": model_type, "hidden_size": 64,
                                                        "num_hidden_layers": 2, "num_attention_heads": 2}))
    no_evaluation(monkeypatch)
    message = cli_error(tiny_argv("--backbone", str(folder)), monkeypatch, capsys)
    assert re.search(f"--backbone {folder}: .*{says}", message), message


# --- images ---------------------------------------------------------------------------------------

def jpeg_split(root: Path) -> Path:
    """root/train/<class>/0.jpg (one per class) and root/test/<class>/{0,1}.jpg: noisy, so that most of
    a file is its compressed pixels and cutting its end leaves the header readable."""
    rng = np.random.default_rng(0)
    for label, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        for part, count in (("train", 1), ("test", 2)):
            for i in range(count):
                path = root / part / f"c{label}" / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.clip(np.array(colour) + rng.integers(-50, 50, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(path, quality=95)
    return root


def split_argv(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--backbone", "tiny", "--dataset", "folder", "--root_path", str(root), "--shots", "1", "--n_iters", "1",
            "--batch_size", "2", "--results_file", str(tmp_path / "r.jsonl"), "--eval_cache_dir", "", *extra]


def truncate(path: Path) -> None:
    """Cut the file short in its pixel data, as an interrupted download does."""
    path.write_bytes(path.read_bytes()[:-200])
    with Image.open(path) as image:  # the header still reads
        assert image.size == (32, 32)


@pytest.mark.parametrize("part, damage, workers", [
    ("test", "garbage", "0"),
    ("test", "truncate", "0"),
    ("test", "truncate", "1"),   # preprocessed in a DataLoader worker process
    ("train", "truncate", "0"),  # decoded once, in threads
])
def test_an_image_that_does_not_decode_is_named(part, damage, workers, tmp_path, monkeypatch, capsys):
    root = jpeg_split(tmp_path / "data")
    bad = root / part / "c0" / "0.jpg"
    bad.write_bytes(b"<html>not found</html>") if damage == "garbage" else truncate(bad)
    message = cli_error(split_argv(root, tmp_path, "--num_workers", workers), monkeypatch, capsys)
    assert message.startswith(f"error: {bad}: cannot decode this image")
    assert "replace or remove" in message


def test_a_train_image_that_fails_in_a_loader_worker_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    # Above --decode_budget_gb the train images are decoded per step, in the loader's worker process;
    # a cut-short JPEG's header still reads, so the first decode is there.
    root = jpeg_split(tmp_path / "data")
    bad = root / "train" / "c1" / "0.jpg"
    truncate(bad)
    message = cli_error(split_argv(root, tmp_path, "--decode_budget_gb", "0", "--num_workers", "1"), monkeypatch,
                        capsys)
    assert message.startswith(f"error: {bad}: cannot decode this image")


def test_an_image_above_the_pixel_limit_is_named_with_how_to_allow_it(tmp_path, monkeypatch, capsys):
    root = jpeg_split(tmp_path / "data")
    big = root / "test" / "c1" / "1.jpg"
    Image.new("RGB", (40, 40), (30, 30, 200)).save(big, format="JPEG")
    monkeypatch.setenv("QLORA_CLIP_MAX_IMAGE_PIXELS", "1500")  # the 32x32 images pass, 40x40 does not
    message = cli_error(split_argv(root, tmp_path), monkeypatch, capsys)
    assert f"{big}: 40x40 = 1,600 pixels, above the limit of 1,500" in message
    assert "remove or shrink the image, or allow it with QLORA_CLIP_MAX_IMAGE_PIXELS=1600" in message
    monkeypatch.setenv("QLORA_CLIP_MAX_IMAGE_PIXELS", "0")
    assert base.open_rgb(big).size == (40, 40)


def test_the_default_pixel_limit_is_pils_and_pils_own_unnamed_check_is_off():
    monkeypatch_free = Image.new("1", (10_000, 9_000))  # 90 M pixels, 11 MB
    with pytest.raises(base.UnreadableImage, match=r"big.png: 10000x9000 = 90,000,000 pixels, above .* 89,478,485"):
        base.check_pixel_count(monkeypatch_free, "big.png")
    assert Image.MAX_IMAGE_PIXELS is None


# --- dataset files ----------------------------------------------------------------------------------

def test_a_missing_dataset_is_said_before_the_hub_is_asked_for_the_backbone(tmp_path, monkeypatch, capsys):
    from qlora_clip.backbones import families, loading

    # Offline, a hub backbone costs retries and tens of seconds before its own error would hide the data's.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "open_checkpoint", lambda *a, **k: pytest.fail("the checkpoint was resolved"))
    monkeypatch.setattr(families, "read_config", lambda *a, **k: pytest.fail("config.json was looked up"))
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    message = cli_error(["--dataset", "dtd", "--root_path", str(empty), "--backbone", "openai/clip-vit-base-patch16",
                         "--results_file", str(tmp_path / "results.jsonl")], monkeypatch, capsys)
    assert message.startswith(f"error: --dataset dtd: {empty / 'dtd' / 'images'} not found")
    assert "DATASETS.md#dtd" in message


def test_an_empty_test_split_is_refused_and_the_checker_says_so(tmp_path, monkeypatch, capsys):
    root = jpeg_split(tmp_path / "data")
    for path in (root / "test").rglob("*.jpg"):
        path.unlink()
    message = cli_error(split_argv(root, tmp_path), monkeypatch, capsys)
    assert f"--dataset folder: your folder under {root} has no test images" in message
    report = check_data.check_dataset("folder", root, workers=1)
    assert report.status == "bad split"
    assert "no test images" in report.error


NOT_UTF8 = "caf\u00e9".encode("latin-1")  # b"caf\xe9"


@pytest.mark.parametrize("name", ["folder", "imagenet", "fgvc"])
def test_a_text_file_that_is_not_utf8_is_named(name, tmp_path):
    if name == "folder":
        root = jpeg_split(tmp_path / "data")
        bad = root / "classnames.txt"
        bad.write_bytes(b"c0 " + NOT_UTF8 + b"\n")
    else:
        tree = trees.build(name, tmp_path)
        root = tree.root
        bad = root / "imagenet" / "classnames.txt" if name == "imagenet" else root / "fgvc_aircraft" / "variants.txt"
        bad.write_bytes(bad.read_bytes() + NOT_UTF8 + b"\n")
    with pytest.raises(UserError, match=rf"{bad}: the .* is not UTF-8 text \(byte 0xe9 at offset \d+\); save it"):
        build_dataset(name, root, shots=1, seed=1)


def idx_gz(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes()))


def test_a_truncated_fashion_mnist_file_is_named_and_the_checker_reports_it(tmp_path, monkeypatch, capsys):
    from datasets import fashion_mnist

    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    for part, n in (("train", 30), ("t10k", 10)):
        idx_gz(folder / f"{part}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), dtype=np.uint8))
        idx_gz(folder / f"{part}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    bad = folder / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:len(bad.read_bytes()) // 2])
    monkeypatch.setattr(fashion_mnist, "SYSTEM_FOLDER", tmp_path / "none")
    with pytest.raises(UserError, match=rf"{bad}: cannot read it .*; re-download it"):
        build_dataset("fashion_mnist", tmp_path, shots=1, seed=1)
    assert check_data.main(["--root_path", str(tmp_path), "--dataset", "fashion_mnist", "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^fashion_mnist\s+bad split", out, re.M)
    assert f"{bad}: cannot read it" in out


def test_the_checker_reports_any_failure_to_read_a_split_as_a_row(tmp_path, monkeypatch, capsys):
    from datasets import dtd

    trees.build("dtd", tmp_path)
    monkeypatch.setattr(dtd, "load", lambda root: [][1])  # a fault no loader names
    assert check_data.main(["--root_path", str(tmp_path), "--dataset", "dtd", "eurosat", "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^dtd\s+unreadable", out, re.M)
    assert "IndexError" in out
    assert re.search(r"^eurosat\s+not found", out, re.M)  # the datasets after it are still checked


# --- a saved adapter for --eval_only -------------------------------------------------------------------

@pytest.mark.parametrize("damage, says", [
    ("adapter_config.json", "adapter_config.json is not a readable adapter configuration"),
    ("adapter_model.safetensors", "adapter_model.safetensors cannot be read"),
])
def test_a_broken_saved_adapter_is_named(damage, says, tiny_argv, tmp_path, monkeypatch, capsys):
    main.main(tiny_argv("--save_path", str(tmp_path / "saved")))
    [target] = (tmp_path / "saved").rglob(damage)
    target.write_bytes(b"{\"r\": 2," if damage.endswith(".json") else target.read_bytes()[:100])
    no_evaluation(monkeypatch)
    message = cli_error(tiny_argv("--save_path", str(tmp_path / "saved"), "--eval_only"), monkeypatch, capsys)
    assert f"--eval_only: {target.parent}/{says}" in message
    assert "save the adapter again" in message


# --- flags ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["--seed", "-1"], "--seed"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--alpha", "inf"], "--alpha"),
    (["--alpha", "nan"], "--alpha"),
])
def test_flags_that_are_not_usable_numbers_are_refused_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.parse_run(argv)
    [error] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert exit_info.value.code == 2
    assert f"error: {flag} must be" in error
    assert (flag == "--lr") == ("--lr" in error)  # --alpha inf no longer blames the learning rate


@pytest.mark.parametrize("flags", [
    ["--extra_args", "--lr '1e-3"],
    ["--launcher", "slurm", "--time", "10", "--sbatch", "--comment 'unclosed"],
])
def test_a_sweep_setting_with_an_unbalanced_quote_is_named(flags, tmp_path, capsys):
    from sweep import main as sweep_main

    argv = ["--datasets", "dtd", "--results_file", str(tmp_path / "r.jsonl"), "--dry-run", *flags]
    try:
        code = sweep_main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2
    assert "no closing quotation" in err
    assert flags[-2] in err
    assert "Traceback" not in err


# --- --split_file ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, says", [
    (lambda folder: folder / "shot_2-seed_1_train.jsonl", r"no such file"),
    (lambda folder: (folder / "shot_2-seed_1_train.jsonl").write_text('{"_impath": "a.jpg"\n') and
     folder / "shot_2-seed_1_train.jsonl", r"shot_2-seed_1_train\.jsonl:1: not a JSON line"),
    (lambda folder: (folder / "split.txt").write_text("banded/banded_0001.jpg 0\n") and folder / "split.txt",
     r"give 2SFS's shot_K-seed_S_train\.jsonl, CoOp's shot_K-seed_S\.pkl or a run's subsets/\*\.json"),
    (lambda folder: (folder / "shot_2-seed_7.pkl").write_bytes(b"not a pickle") and folder / "shot_2-seed_7.pkl",
     r"not read .*only CoOp/Dassl's split_fewshot pickles"),
], ids=["missing", "not JSON lines", "unknown format", "not a pickle"])
def test_a_missing_or_malformed_split_file_is_refused_before_anything_loads(make, says, tmp_path, capsys):
    path = make(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main.parse_run(["--dataset", "dtd", "--root_path", str(tmp_path), "--shots", "2", "--split_file", str(path)])
    [error] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert exit_info.value.code == 2
    assert re.search(rf"error: --split_file {re.escape(str(path))}.*{says}", error), error


def test_a_split_file_naming_other_images_stops_the_run_before_any_model_loads(tmp_path, monkeypatch, capsys):
    tree = trees.build("dtd", tmp_path / "DATA")
    train = trees.hand_picked(tree, "train", 2)
    missing = [("braided/not_there.jpg", train[0][1])] + train[1:]  # the class of the image it replaces
    path = trees.write_2sfs_pair(tmp_path / "split_fewshot", "shot_2-seed_1", missing, None, tree.classnames)
    monkeypatch.setattr(main, "load_bundle", lambda *a, **k: pytest.fail("the run loaded a model"))
    message = cli_error(["--backbone", "tiny", "--dataset", "dtd", "--root_path", str(tree.root), "--shots", "2",
                         "--split_file", str(path), "--results_file", str(tmp_path / "r.jsonl")], monkeypatch, capsys)
    assert message.startswith(f"error: --split_file {path}, train list: entry 0 names braided/not_there.jpg, which is "
                              "not an image of the dataset's split")


def test_a_split_file_for_fashion_mnist_is_refused(tmp_path, capsys):
    (tmp_path / "subset.json").write_text("{}")
    with pytest.raises(SystemExit):
        main.parse_run(["--dataset", "fashion_mnist", "--split_file", str(tmp_path / "subset.json")])
    assert "fashion_mnist's images are indices into its IDX files" in capsys.readouterr().err
