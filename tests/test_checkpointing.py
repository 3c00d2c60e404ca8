"""qlora_clip/checkpointing.py: --checkpoint_every / --resume, through main.py; the unit tests of
TrainCheckpoint (round trip, atomic replace, when a state is due) follow."""
from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from saved_weights import assert_same_adapters

import main
from qlora_clip.training.checkpointing import TrainCheckpoint, read_checkpoint
from qlora_clip.errors import UserError
from qlora_clip.training.precision import resolve_precision
from run_utils import parse_args, run_spec

REPO = Path(__file__).resolve().parents[1]


def test_killed_run_resumes_to_the_same_weights(tiny_argv, tmp_path):
    run = ["--shots", "4", "--n_iters", "10", "--lr", "1e-2", "--mode", "dora"]  # 40 steps
    uninterrupted = main.main(tiny_argv(*run, "--save_path", str(tmp_path / "a")))

    resumable = tiny_argv(*run, "--save_path", str(tmp_path / "b"), "--checkpoint_every", "4",
                          "--checkpoint_dir", str(tmp_path / "ck"))
    state = run_spec(parse_args(resumable)).checkpoint_path
    proc = subprocess.Popen([sys.executable, "main.py", *resumable], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert still_running, "the run finished before it could be killed"
    killed_at = read_checkpoint(state)["step"]
    assert 0 < killed_at < 40
    assert not (tmp_path / "b").exists()  # it never got to save its adapter

    resumed = main.main([*resumable, "--resume"])
    assert_same_adapters(tmp_path / "a", tmp_path / "b", exact=True)
    assert resumed["test_acc"] == uninterrupted["test_acc"]
    assert resumed["final_loss"] == uninterrupted["final_loss"]


def test_resume_without_a_checkpoint_starts_at_step_zero(tiny_argv, tmp_path):
    fresh = main.main(tiny_argv("--save_path", str(tmp_path / "a")))
    resumed = main.main(tiny_argv("--save_path", str(tmp_path / "b"), "--resume",
                                  "--checkpoint_dir", str(tmp_path / "none")))
    assert_same_adapters(tmp_path / "a", tmp_path / "b", exact=True)
    assert resumed["total_steps"] == fresh["total_steps"]


def test_other_settings_never_share_a_checkpoint_and_a_misplaced_one_is_refused(tiny_argv, tmp_path):
    ck = ["--checkpoint_dir", str(tmp_path / "ck"), "--checkpoint_every", "1", "--n_iters", "2"]
    main.main(tiny_argv(*ck))
    first = run_spec(parse_args(tiny_argv(*ck))).checkpoint_path
    other = run_spec(parse_args(tiny_argv(*ck, "--lr", "1e-3"))).checkpoint_path
    assert first.exists()
    assert other != first
    assert not other.exists()
    # A state copied to another run's folder (by hand, or by a tool that flattened the layout).
    other.parent.mkdir(parents=True)
    shutil.copy(first, other)
    with pytest.raises(UserError, match=r"--resume: .* different --lr"):
        main.main(tiny_argv(*ck, "--resume", "--lr", "1e-3"))
    # Evaluation-only differences train the same adapter: the state is resumed, not refused.
    assert run_spec(parse_args(tiny_argv(*ck, "--gradient_checkpointing"))).checkpoint_path == first


def test_checkpoint_every_writes_states_only_when_asked(tiny_argv, tmp_path):
    main.main(tiny_argv("--checkpoint_dir", str(tmp_path / "never")))
    assert not (tmp_path / "never").exists()
    main.main(tiny_argv("--checkpoint_dir", str(tmp_path / "ck"), "--checkpoint_every", "2", "--n_iters", "1"))
    assert len(list((tmp_path / "ck").rglob("train_state.pt"))) == 1


# --- TrainCheckpoint on its own --------------------------------------------------------------------

CPU = torch.device("cpu")
FINGERPRINT = {"lr": 2e-4, "r": 2}


def training_state(seed: int):
    """A small model with its optimizer, schedule and fp16 gradient scaler, two steps into training."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # frozen weights are not part of the state
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10, eta_min=1e-6)
    scaler = resolve_precision("fp16", CPU).grad_scaler()
    for _ in range(2):
        model(torch.randn(5, 3)).square().sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    scaler.scale(torch.tensor(1.0))
    scaler.update(new_scale=1024.0 * seed)
    return model, optimizer, scheduler, scaler


def random_draws() -> tuple:
    return torch.rand(3).tolist(), random.random(), np.random.rand()


def test_a_saved_state_restores_weights_optimizer_schedule_scaler_and_random_streams(tmp_path):
    checkpoint = TrainCheckpoint(tmp_path / "run" / "train_state.pt", 2, FINGERPRINT, CPU)
    model, optimizer, scheduler, scaler = training_state(seed=1)
    checkpoint.save(2, model, optimizer, scheduler, scaler, [1.5, 0.5], 3.25)
    expected_draws = random_draws()  # what the run draws next, after the save

    other = training_state(seed=2)  # another run's objects, restored to the saved state
    state = checkpoint.load()
    assert (state["step"], state["losses"], state["seconds"]) == (2, [1.5, 0.5], 3.25)
    assert set(state["adapter"]) == {"0.bias", "1.weight", "1.bias"}
    checkpoint.restore(state, *other)
    restored_model, restored_optimizer, restored_scheduler, restored_scaler = other
    assert random_draws() == expected_draws
    for (name, a), (_, b) in zip(model.named_parameters(), restored_model.named_parameters()):
        assert torch.equal(a, b) or name == "0.weight", name  # the frozen weight stays the other run's
    assert not torch.equal(model[0].weight, restored_model[0].weight)
    for a, b in zip(optimizer.state.values(), restored_optimizer.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert restored_scheduler.last_epoch == 2
    assert restored_optimizer.param_groups[0]["lr"] == scheduler.get_last_lr()[0]
    assert restored_scaler.get_scale() == 1024.0


def test_a_failed_save_leaves_the_previous_state_in_place(tmp_path, monkeypatch):
    path = tmp_path / "train_state.pt"
    checkpoint = TrainCheckpoint(path, 2, FINGERPRINT, CPU)
    objects = training_state(seed=1)
    checkpoint.save(2, *objects, [1.0, 0.5], 1.0)
    real_save = torch.save

    def save_then_fail(state, f):
        real_save(state, f)
        f.truncate(100)  # half written, as when the disk fills or the process dies here
        assert read_checkpoint(path)["step"] == 2  # the state in place is not the one written
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(4, *objects, [1.0, 0.5, 0.25, 0.125], 2.0)
    monkeypatch.undo()
    state = checkpoint.load()
    assert state["step"] == 2
    assert state["losses"] == [1.0, 0.5]
    checkpoint.save(4, *objects, [1.0, 0.5, 0.25, 0.125], 2.0)  # the next save replaces it
    assert checkpoint.load()["step"] == 4


def test_states_are_due_every_n_steps_but_never_at_the_last_one_nor_when_off(tmp_path):
    def due_steps(every: int, total: int) -> list[int]:
        checkpoint = TrainCheckpoint(tmp_path / "s.pt", every, FINGERPRINT, CPU)
        return [step for step in range(1, total + 1) if checkpoint.due(step, total)]

    assert due_steps(3, 10) == [3, 6, 9]
    assert due_steps(5, 10) == [5]  # step 10 ends the run: its results follow, not a state
    assert due_steps(1, 3) == [1, 2]
    assert due_steps(0, 10) == []
    assert due_steps(20, 10) == []


def test_loading_gives_none_without_a_state_and_refuses_another_runs(tmp_path):
    path = tmp_path / "train_state.pt"
    assert TrainCheckpoint(path, 2, FINGERPRINT, CPU).load() is None
    assert not path.exists()
    TrainCheckpoint(path, 2, FINGERPRINT, CPU).save(2, *training_state(seed=1), [1.0], 1.0)
    other = TrainCheckpoint(path, 2, {**FINGERPRINT, "lr": 1e-3}, CPU)
    with pytest.raises(UserError, match=r"written by a run with different --lr; resume with the same flags"):
        other.load()


# --- only an intact checkpoint of plain data resumes ----------------------------------------------

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
    assert full.keys() == again.keys()
    assert all(torch.equal(full[k], again[k]) for k in full)
    assert resumed["final_loss"] == record["final_loss"]
    assert resumed["test_acc"] == record["test_acc"]


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
    monkeypatch.setattr(main, "load_bundle", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main.main([*argv, "--resume"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--resume: {path} {what}" in err
    assert "delete it to start over" in err
    # The trainer's own read (a file damaged after the run started) says the same.
    with pytest.raises(UserError, match=f"{what}.*delete it to start over"):
        read_checkpoint(path)


def test_the_cli_exits_2_on_a_damaged_checkpoint(saved):
    argv, _, path = saved
    flip_middle_byte(path)
    proc = subprocess.run([sys.executable, "main.py", *argv, "--resume"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert "delete it to start over" in proc.stderr
    assert "Traceback" not in proc.stderr


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
        assert str(path) in err
        assert "delete it to start over" in err
        assert not (tmp_path / "ran").exists()
    path.write_bytes(with_valid_header(crafted))
    with pytest.raises(UserError, match="refused unread"):
        read_checkpoint(path)
    assert not (tmp_path / "ran").exists()


def test_the_saved_rng_states_are_plain_data(saved):
    _, _, path = saved
    state = read_checkpoint(path)  # weights_only: would fail on a numpy array or any other object
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    assert isinstance(state["rng"]["python"]["internal"], list)


def test_a_state_saved_before_a_flag_existed_resumes_and_a_changed_flag_is_named(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    path = tmp_path / "train_state.pt"
    old = TrainCheckpoint(path, 1, {"lr": 0.1}, torch.device("cpu"))  # written before --new_flag existed
    old.save(1, model, optimizer, scheduler, scaler, [0.5], 1.0)
    complete = lambda saved: {"new_flag": "its default", **saved}  # noqa: E731 - RunSpec.trained_identity_of's role
    now = TrainCheckpoint(path, 1, {"lr": 0.1, "new_flag": "its default"}, torch.device("cpu"), complete)
    assert now.load()["step"] == 1
    changed = TrainCheckpoint(path, 1, {"lr": 0.1, "new_flag": "another value"}, torch.device("cpu"), complete)
    with pytest.raises(UserError, match="different --new_flag;"):
        changed.load()
