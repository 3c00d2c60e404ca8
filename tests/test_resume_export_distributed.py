"""Interrupted runs resume exactly, merged exports match the adapter, 2 processes match 1."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel

import main
from datasets import build_dataset
from qlora_clip.checkpointing import read_checkpoint
from qlora_clip.distributed import Distributed
from qlora_clip.encode import ClassPrompts, image_features
from qlora_clip.errors import UserError
from qlora_clip.evaluator import EvalSet, EvalSettings, Evaluator, build_eval_set
from qlora_clip.model import load_clip
from qlora_clip.precision import resolve_precision
from run_utils import parse_args, run_spec

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    found = list(folder.rglob("adapter_model.safetensors"))
    assert len(found) == 1, found
    return load_file(found[0])


def assert_same_adapters(a: Path, b: Path, exact: bool) -> None:
    ta, tb = adapter_tensors(a), adapter_tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        if exact:
            assert torch.equal(ta[key], tb[key]), key
        else:
            torch.testing.assert_close(ta[key], tb[key], rtol=1e-3, atol=1e-5)


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


@pytest.mark.parametrize("mode", ["lora", "qlora", "qdora"])
def test_merged_export_is_a_plain_clip_with_the_adapters_outputs(mode, tiny_argv, tmp_path, color_folder):
    export = tmp_path / "merged"
    record = main.main(tiny_argv("--mode", mode, "--lr", "2e-2", "--n_iters", "2", "--merge_export", str(export),
                                 "--save_path", str(tmp_path / "ckpt")))
    assert record["merge_export"] == str(export)
    assert not (export / "adapter_config.json").exists()
    merged = CLIPModel.from_pretrained(export)  # nothing but transformers
    assert not any("lora" in name for name, _ in merged.named_parameters())

    args = parse_args(tiny_argv("--mode", mode, "--save_path", str(tmp_path / "ckpt"), "--eval_only"))
    data = build_dataset(args.dataset, args.root_path, args.shots, args.seed)
    bundle = load_clip(run_spec(args).model, CPU, torch.float32, saved_adapter=Path(record["adapter_dir"]))
    prompts = ClassPrompts(bundle.tokenizer, data.prompts(), CPU)
    settings = EvalSettings(bundle.image, 64, None, 0, Distributed(rank=0, world=1, device=CPU))
    test = build_eval_set("folder", data.test, data.load_image, prompts, settings)
    images = next(iter(test.loader))[0]
    bundle.model.eval()
    with torch.no_grad():
        adapted = image_features(bundle.model, images) @ prompts.features(bundle.model).T
        plain = image_features(merged, images) @ prompts.features(merged).T
    assert (adapted - plain).abs().max() > 0 or mode == "lora"  # computed through different layers
    torch.testing.assert_close(plain, adapted, rtol=1e-4, atol=1e-4)
    fp32 = resolve_precision("fp32", CPU)
    assert Evaluator(merged, fp32).accuracy(EvalSet("folder", test.loader, prompts)) == record["test_acc"]


def free_port() -> int:
    """A port no other test run on this machine holds (several suites may run at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_and_share_the_evaluation(tiny_argv, tmp_path):
    # 12 train images at batch 5: steps of 5, 5 and a short 2, and 5 images split 3 + 2 over the
    # two processes; each process's loss is divided by the step's 5 images, so the summed
    # gradient is the 1-process one.
    run = tiny_argv("--shots", "3", "--batch_size", "5", "--n_iters", "2", "--lr", "1e-2", "--dropout_rate", "0",
                    "--device", "cpu")
    single = main.main([*run, "--save_path", str(tmp_path / "one")])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # accelerate's own CPU multi-process launcher needs MPI; its torchrun-based one (--multi_gpu)
    # starts the processes, and --device cpu makes them a gloo group.
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
         "main.py", *run, "--save_path", str(tmp_path / "two"), "--results_file", str(tmp_path / "two.jsonl")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "two.jsonl").read_text().splitlines()
    assert len(lines) == 1  # only the main process writes
    import json
    double = json.loads(lines[0])
    assert double["processes"] == 2 and double["total_steps"] == single["total_steps"] == 6
    assert double["train_images_seen"] == single["train_images_seen"] == 5 + 5 + 2 + 5 + 5 + 2
    assert_same_adapters(tmp_path / "one", tmp_path / "two", exact=False)
    assert double["final_loss"] == pytest.approx(single["final_loss"], rel=1e-5)
    # Each process encoded half of the 16 test images; the summed counts give the 1-process accuracy.
    assert single["test_images_per_process"] == [16] and double["test_images_per_process"] == [8, 8]
    assert double["test_acc"] == single["test_acc"] and double["zero_shot_acc"] == single["zero_shot_acc"]
