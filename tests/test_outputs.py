"""Every place a run writes is checked before anything loads; --merge_export never overwrites what it
should not; a failed results append leaves the file as it was."""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
from transformers import CLIPModel

import main
import run_utils
from qlora_clip.run import outputs
from qlora_clip.run import results
from qlora_clip.errors import UserError
from qlora_clip.backbones.tiny_clip import tiny_checkpoint_dir


def refusal(argv: list[str], monkeypatch, capsys) -> str:
    """main.py's error line for `argv`, asserting it stops with exit 2 before the model loads."""
    monkeypatch.setattr(main, "load_bundle", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.setattr(main, "build_dataset", lambda *a, **k: pytest.fail("the dataset was read"))
    with pytest.raises(SystemExit) as exit_info:
        main.main(argv)
    assert exit_info.value.code == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    return line


def a_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("flag, make, says", [
    ("--results_file", lambda p: p.mkdir() or p, "is a folder; give the path of a file"),
    ("--results_file", lambda p: a_file(p) / "results.jsonl", "is a file, so .* cannot be created"),
    ("--save_path", a_file, "is a file, so .* cannot be created"),
    ("--checkpoint_dir", a_file, "is a file, so .* cannot be created"),
    ("--merge_export", a_file, "is a file, not a folder"),
    ("--eval_cache_dir", a_file, "is a file, not a folder"),
])
def test_an_output_location_that_cannot_be_written_stops_the_run_first(flag, make, says, tiny_argv, tmp_path,
                                                                       monkeypatch, capsys):
    path = make(tmp_path / "out")
    extra = ["--checkpoint_every", "1"] if flag == "--checkpoint_dir" else []
    line = refusal(tiny_argv(flag, str(path), *extra), monkeypatch, capsys)
    assert line.startswith(f"main.py: error: {flag}"), line
    assert re.search(says, line), line


def test_an_unwritable_folder_is_named(tiny_argv, tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # The tests run as root, whom permissions do not stop: pretend the folder is read-only.
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    line = refusal(tiny_argv("--save_path", str(locked / "adapters")), monkeypatch, capsys)
    assert f"--save_path: {locked / 'adapters'}" in line
    assert f"{locked} is not writable" in line


def test_checkpoint_dir_is_checked_only_when_checkpoints_are_written(tiny_argv, tmp_path):
    args = run_utils.parse_args(tiny_argv("--checkpoint_dir", str(a_file(tmp_path / "ck"))))
    assert args.checkpoint_every == 0


# --- --merge_export ----------------------------------------------------------------------------------

def test_merge_export_refuses_a_folder_with_files(tiny_argv, tmp_path, monkeypatch, capsys):
    target = tmp_path / "export"
    a_file(target / "notes.txt")
    line = refusal(tiny_argv("--merge_export", str(target)), monkeypatch, capsys)
    assert f"--merge_export {target} is not empty" in line
    assert "--overwrite_export" in line
    # --overwrite_export replaces only a model folder, never a folder of other files.
    line = refusal(tiny_argv("--merge_export", str(target), "--overwrite_export"), monkeypatch, capsys)
    assert "no config.json, so it is not a model folder" in line
    assert (target / "notes.txt").read_text() == "not a folder"


@pytest.mark.parametrize("where", ["the folder", "inside it", "its parent"])
def test_merge_export_refuses_the_backbone_folder_even_with_overwrite(where, tiny_argv, monkeypatch, capsys):
    backbone = tiny_checkpoint_dir()
    target = {"the folder": backbone, "inside it": backbone / "merged", "its parent": backbone.parent}[where]
    before = sorted(p.name for p in backbone.iterdir())
    line = refusal(tiny_argv("--merge_export", str(target), "--overwrite_export"), monkeypatch, capsys)
    assert "the --backbone folder" in line
    assert str(backbone) in line
    assert sorted(p.name for p in backbone.iterdir()) == before


def test_a_local_backbone_folder_is_protected_too(tiny_argv, tmp_path, monkeypatch, capsys):
    import shutil

    folder = tmp_path / "my-clip"
    shutil.copytree(tiny_checkpoint_dir(), folder)
    line = refusal(tiny_argv("--backbone", str(folder), "--merge_export", str(folder), "--overwrite_export"),
                   monkeypatch, capsys)
    assert f"--merge_export {folder} is, holds or lies inside the --backbone folder" in line


def test_overwrite_export_replaces_a_previous_export_as_a_whole(tiny_argv, tmp_path):
    target = tmp_path / "export"
    main.main(tiny_argv("--merge_export", str(target)))
    (target / "adapter_config.json").write_text("{}")  # a stray file the new export must not keep
    record = main.main(tiny_argv("--merge_export", str(target), "--overwrite_export", "--seed", "2"))
    assert record["merge_export"] == str(target)
    assert not (target / "adapter_config.json").exists()
    card = (target / "README.md").read_text()
    assert "(seed 2)" in card
    assert repr(str(target)) in card  # the second run's card, naming the final folder
    CLIPModel.from_pretrained(target)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_an_empty_target_folder_is_fine_and_overwrite_needs_an_export(tiny_argv, tmp_path, capsys):
    (tmp_path / "export").mkdir()
    assert run_utils.parse_args(tiny_argv("--merge_export", str(tmp_path / "export")))
    with pytest.raises(SystemExit):
        run_utils.parse_args(tiny_argv("--overwrite_export"))
    assert "--overwrite_export goes with --merge_export" in capsys.readouterr().err


# --- a full disk under the results file ----------------------------------------------------------------

def test_a_failed_append_leaves_no_fragment_and_says_so(tmp_path, monkeypatch, caplog):
    path = tmp_path / "results.jsonl"
    record = {"mode": "lora", "dataset": "dtd", "shots": 1, "seed": 1, "backbone": "tiny", "payload": "x" * 5000}
    results.append_jsonl(path, record)
    path.write_bytes(path.read_bytes() + b'{"torn": ')  # a killed writer's fragment is already there
    before = path.read_bytes()
    real_write = os.write

    def full_disk(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}") != str(path):
            return real_write(fd, data)
        real_write(fd, bytes(data[:1000]))  # part of the line reaches the disk, then it is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(results.os, "write", full_disk)
    with pytest.raises(UserError, match=rf"--results_file {path}: the results line could not be written "
                                        r"\(No space left on device\); the file is as it was before"):
        results.append_jsonl(path, {**record, "seed": 2})
    assert path.read_bytes() == before
    assert '"seed": 2' in caplog.text  # the run's line is not lost

    monkeypatch.setattr(results.os, "write", real_write)
    results.append_jsonl(path, {**record, "seed": 3})
    lines, problems = results.read_results(path)
    assert [r["seed"] for r in lines] == [1, 3]
    assert len(problems) == 1  # only the old torn fragment
