"""Bad inputs stop a run with one line naming the file or flag and what to do (exit 2), never a
traceback, and never a run that goes on to a meaningless number."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

import main
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
