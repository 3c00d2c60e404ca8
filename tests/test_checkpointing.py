"""qlora_clip/checkpointing.py: --checkpoint_every / --resume, through main.py; the unit tests of
TrainCheckpoint (round trip, atomic replace, when a state is due) follow."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from saved_weights import assert_same_adapters

import main
from qlora_clip.errors import UserError
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
    killed_at = torch.load(state, weights_only=False)["step"]
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
    assert first.exists() and other != first and not other.exists()
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
