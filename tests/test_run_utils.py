"""Flags: CLIP-LoRA defaults, validation of bad values, and clear errors for bad paths."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import main
from qlora_clip.errors import UserError
from qlora_clip.model import resolve_backbone
from run_utils import parse_args, run_spec

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_clip_loras():
    args = parse_args([])
    assert (args.shots, args.seed, args.r, args.alpha, args.dropout_rate) == (16, 1, 2, 1.0, 0.25)
    assert (args.lr, args.n_iters, args.batch_size) == (2e-4, 500, 32)
    assert (args.encoder, args.position, args.params) == ("both", "all", ["q", "k", "v"])
    assert args.lora_scaling == "rslora" and args.backbone == "ViT-B/16" and args.mode == "lora"
    assert args.results_file == "results/results.jsonl" and args.template == "clip-lora"


@pytest.mark.parametrize("argv, flag", [
    (["--shots", "0"], "--shots"),
    (["--r", "0"], "--r"),
    (["--alpha", "-1"], "--alpha"),
    (["--dropout_rate", "1.0"], "--dropout_rate"),
    (["--lr", "0"], "--lr"),
    (["--n_iters", "-1"], "--n_iters"),
    (["--batch_size", "0"], "--batch_size"),
    (["--num_workers", "-2"], "--num_workers"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps"),
    (["--batch_size", "32", "--gradient_accumulation_steps", "3"], "--gradient_accumulation_steps"),
    (["--params", "q", "q"], "--params"),
    (["--params", "x"], "--params"),
    (["--mode", "adapter"], "--mode"),
    (["--position", "left"], "--position"),
    (["--encoder", "audio"], "--encoder"),
    (["--compute_dtype", "fp8"], "--compute_dtype"),
    (["--eval_only"], "--eval_only"),
])
def test_bad_values_fail_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_cuda_request_without_gpu_is_refused(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        parse_args(["--device", "cuda"])
    assert "--device cuda" in capsys.readouterr().err


def test_backbone_aliases_resolve_to_openai_hub_ids():
    assert resolve_backbone("ViT-B/16") == "openai/clip-vit-base-patch16"
    assert resolve_backbone("ViT-B/32") == "openai/clip-vit-base-patch32"
    assert resolve_backbone("ViT-L/14") == "openai/clip-vit-large-patch14"
    assert resolve_backbone("someone/their-clip") == "someone/their-clip"
    assert (Path(resolve_backbone("tiny")) / "model.safetensors").exists()


def test_missing_local_backbone_folder_is_named(tiny_argv, tmp_path):
    with pytest.raises(UserError, match=r"--backbone .*no such checkpoint folder"):
        main.main(tiny_argv("--backbone", str(tmp_path / "nope")))


def test_unreachable_hub_model_points_to_tiny(tiny_argv):
    # HF_HUB_OFFLINE=1 (conftest) makes the failed fetch immediate instead of retried.
    with pytest.raises(UserError, match=r"--backbone ViT-B/16: could not load .*--backbone tiny"):
        main.main(tiny_argv("--backbone", "ViT-B/16"))


def test_cli_prints_error_and_exits_2(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "main.py", "--dataset", "folder", "--root_path", str(tmp_path / "missing"),
                           "--backbone", "tiny", "--results_file", str(tmp_path / "r.jsonl")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "error: --dataset folder: --root_path" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_dataset_lists_choices(tiny_argv, capsys):
    with pytest.raises(SystemExit):
        main.main(tiny_argv("--dataset", "nope"))
    assert re.search(r"--dataset: invalid choice: 'nope' \(choose from .*'fashion_mnist'", capsys.readouterr().err)


def test_missing_fashion_mnist_explains_install(tiny_argv, tmp_path, monkeypatch):
    from datasets import fashion_mnist
    monkeypatch.setattr(fashion_mnist, "SYSTEM_FOLDER", tmp_path / "none")
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        main.main(tiny_argv("--dataset", "fashion_mnist", "--root_path", str(tmp_path)))


def test_adapter_dir_layout():
    args = parse_args(["--save_path", "ckpt", "--backbone", "ViT-B/16", "--dataset", "dtd",
                       "--shots", "4", "--seed", "3", "--mode", "qdora"])
    assert run_spec(args).adapter_dir == Path("ckpt/ViT-B-16/dtd/4shots/seed3/qdora")
