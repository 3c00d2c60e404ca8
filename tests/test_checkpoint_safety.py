"""--resume trusts only an intact checkpoint of plain data: a damaged one, or one that would run code
when unpickled, is refused with a message, and an intact one still resumes bit for bit."""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import main
from qlora_clip.checkpointing import read_checkpoint
from qlora_clip.errors import UserError
from run_utils import parse_args, run_spec

REPO = Path(__file__).resolve().parents[1]
RUN = ["--n_iters", "2", "--lr", "1e-2", "--checkpoint_every", "4"]  # 8 steps, a state saved at step 4


def state_file(argv: list[str]) -> Path:
    """Where the run of `argv` keeps its training state (its RunSpec decides)."""
    return run_spec(parse_args(argv)).checkpoint_path


def run_argv(color_folder: Path, folder: Path, *extra: str) -> list[str]:
    return ["--backbone", "tiny", "--dataset", "folder", "--root_path", str(color_folder), "--shots", "4",
            "--batch_size", "8", "--results_file", str(folder / "results.jsonl"), *RUN,
            "--checkpoint_dir", str(folder / "ck"), *extra]


@pytest.fixture(scope="module")
def finished(color_folder, tmp_path_factory):
    """One finished run that left its step-4 state: (its folder, its record)."""
    folder = tmp_path_factory.mktemp("finished")
    record = main.main(run_argv(color_folder, folder, "--save_path", str(folder / "full")))
    assert read_checkpoint(state_file(run_argv(color_folder, folder)))["step"] == 4
    return folder, record


@pytest.fixture
def saved(finished, color_folder, tmp_path):
    """A copy of the finished run's checkpoint folder: (argv that resumes from it, the record, the state's path)."""
    folder, record = finished
    shutil.copytree(folder / "ck", tmp_path / "ck")
    argv = run_argv(color_folder, tmp_path)
    return argv, record, state_file(argv)


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    [path] = folder.rglob("adapter_model.safetensors")
    return load_file(path)


def test_an_intact_checkpoint_resumes_bit_for_bit(saved, finished, tmp_path):
    argv, record, _ = saved
    resumed = main.main([*argv, "--resume", "--save_path", str(tmp_path / "resumed")])
    full, again = adapter(finished[0] / "full"), adapter(tmp_path / "resumed")
    assert full.keys() == again.keys() and all(torch.equal(full[k], again[k]) for k in full)
    assert resumed["final_loss"] == record["final_loss"] and resumed["test_acc"] == record["test_acc"]


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGE = {
    "a flipped byte": (flip_middle_byte, "is damaged"),
    "truncated": (lambda path: path.write_bytes(path.read_bytes()[:-1000]), "is truncated"),
    "empty": (lambda path: path.write_bytes(b""), "is empty"),
    "no header (an older version's file)": (
        lambda path: torch.save(read_checkpoint(path), path), "is not a training state with a checksum"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_refused_before_anything_loads(damage, saved, capsys, monkeypatch):
    argv, _, path = saved
    spoil, what = DAMAGE[damage]
    spoil(path)
    monkeypatch.setattr(main, "load_clip", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main.main([*argv, "--resume"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--resume: {path} {what}" in err and "delete it to start over" in err
    # The trainer's own read (a file damaged after the run started) says the same.
    with pytest.raises(UserError, match=f"{what}.*delete it to start over"):
        read_checkpoint(path)


def test_the_cli_exits_2_on_a_damaged_checkpoint(saved):
    argv, _, path = saved
    flip_middle_byte(path)
    proc = subprocess.run([sys.executable, "main.py", *argv, "--resume"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "delete it to start over" in proc.stderr and "Traceback" not in proc.stderr


class CreatesMarker:
    """Unpickling it calls open(marker, 'w'): what a crafted checkpoint could do with any function."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def with_valid_header(payload: bytes) -> bytes:
    header = f"qlora-clip train state v1 sha256={hashlib.sha256(payload).hexdigest()} bytes={len(payload)}\n"
    return header.encode() + payload


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(saved, tmp_path, capsys):
    argv, _, path = saved
    buffer = io.BytesIO()
    torch.save({"step": 4, "fingerprint": {}, "adapter": {}, "rng": CreatesMarker(tmp_path / "ran")}, buffer)
    crafted = buffer.getvalue()
    # The payload is live: plain unpickling runs it.
    proof = io.BytesIO()
    torch.save({"x": CreatesMarker(tmp_path / "proof")}, proof)
    torch.load(io.BytesIO(proof.getvalue()), weights_only=False)
    assert (tmp_path / "proof").exists()

    for content in (with_valid_header(crafted), crafted):  # checksum right, or no header at all
        path.write_bytes(content)
        with pytest.raises(SystemExit) as exit_info:
            main.main([*argv, "--resume"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert str(path) in err and "delete it to start over" in err
        assert not (tmp_path / "ran").exists()
    path.write_bytes(with_valid_header(crafted))
    with pytest.raises(UserError, match="refused unread"):
        read_checkpoint(path)
    assert not (tmp_path / "ran").exists()


def test_the_saved_rng_states_are_plain_data(saved):
    _, _, path = saved
    state = read_checkpoint(path)  # weights_only: would fail on a numpy array or any other object
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor) and isinstance(state["rng"]["python"]["internal"],
                                                                                  list)
