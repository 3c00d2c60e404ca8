"""Bad inputs stop a run with one line naming the file or flag and what to do (exit 2), never a
traceback, and never a run that goes on to a meaningless number."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import main
from datasets import base
from qlora_clip.encode import ClassPrompts
from qlora_clip.errors import UserError
from qlora_clip.tiny_clip import tiny_checkpoint_dir

CPU = torch.device("cpu")


def cli_error(argv: list[str], monkeypatch, capsys) -> str:
    """Run main.py's command line in this process; assert exit 2 and a one-line message; return it."""
    monkeypatch.setattr(sys, "argv", ["main.py", *argv])
    code = main.cli()
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
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
    with pytest.raises(UserError, match=rf"--backbone {folder}: the folder has no tokenizer files"):
        main.main(tiny_argv("--backbone", str(folder)))
    message = cli_error(tiny_argv("--backbone", str(folder)), monkeypatch, capsys)
    assert str(folder) in message and "tokenizer.json" in message


def test_prompts_the_same_in_clips_context_are_refused():
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_checkpoint_dir())
    long = "a photo of a " + "very " * 20
    with pytest.raises(UserError, match="the same in their first 77 tokens"):
        ClassPrompts(tokenizer, [long + "big cat.", long + "big dog."], CPU)
    ClassPrompts(tokenizer, ["a photo of a crane.", "a photo of a crane.", "a photo of a dog."], CPU)  # as ImageNet


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
    assert message.startswith(f"error: {bad}: cannot decode this image") and "replace or remove" in message


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
