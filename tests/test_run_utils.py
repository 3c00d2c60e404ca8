"""run_utils.py, main.py's flags: CLIP-LoRA's defaults, and bad values refused naming the flag."""
from __future__ import annotations

import re

import pytest

import main
from run_utils import parse_args


def test_defaults_are_clip_loras():
    args = parse_args([])
    assert (args.shots, args.seed, args.r, args.alpha, args.dropout_rate) == (16, 1, 2, 1.0, 0.25)
    assert (args.lr, args.n_iters, args.batch_size) == (2e-4, 500, 32)
    assert (args.encoder, args.position, args.params) == ("both", "all", ["q", "k", "v"])
    assert args.lora_scaling == "rslora"
    assert args.backbone == "ViT-B/16"
    assert args.mode == "lora"
    assert args.results_file == "results/results.jsonl"
    assert args.template == "clip-lora"


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


def test_unknown_dataset_lists_choices(tiny_argv, capsys):
    with pytest.raises(SystemExit):
        main.main(tiny_argv("--dataset", "nope"))
    assert re.search(r"--dataset: invalid choice: 'nope' \(choose from .*'fashion_mnist'", capsys.readouterr().err)


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "imagenet_a"], "--dataset imagenet_a is a test-only dataset"),
    (["--dataset", "imagenet_r", "--protocol", "base2new"], "base-to-novel needs train images too"),
    (["--dataset", "dtd", "--eval_datasets", "eurosat", "eurosat"], "--eval_datasets lists eurosat more than once"),
    (["--dataset", "dtd", "--eval_datasets", "dtd"], "--eval_datasets dtd: that is the --dataset itself"),
    (["--dataset", "dtd", "--eval_datasets", "folder"], "--eval_datasets folder: your own images"),
    (["--dataset", "folder", "--eval_datasets", "dtd"], "--eval_datasets with --dataset folder"),
    (["--eval_datasets", "imagenet-a"], "--eval_datasets: invalid choice: 'imagenet-a'"),
    (["--protocol", "base-to-new"], "--protocol: invalid choice"),
])
def test_bad_protocol_flags_fail_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
