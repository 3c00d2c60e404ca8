"""run_utils.py, main.py's flags: CLIP-LoRA's defaults, and bad values refused naming the flag."""
from __future__ import annotations

import re

import pytest

import main
from run_utils import parse_args, run_spec


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


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "dtd", "--eval_datasets", "ood_sun"], "--eval_datasets ood_sun: an OOD set is unlabelled"),
    (["--dataset", "dtd", "--ood_datasets", "ood_sun", "ood_sun"], "--ood_datasets lists ood_sun more than once"),
    (["--dataset", "dtd", "--ood_datasets", "dtd"], "--ood_datasets dtd: that is the --dataset itself"),
    (["--dataset", "folder", "--ood_datasets", "ood_sun"], "--ood_datasets ood_sun: with --dataset folder"),
    (["--ood_datasets", "no/such/folder"], "--ood_datasets no/such/folder: neither a dataset name"),
    (["--interpolate", "0", "1.5"], "--interpolate 1.5: each alpha must be in [0, 1]"),
    (["--interpolate", "nan"], "--interpolate nan: each alpha must be in [0, 1]"),
    (["--interpolate", "0.5", "0.5"], "--interpolate lists an alpha more than once"),
    (["--select_every", "5"], "--select_every 5 goes with --select_on val"),
    (["--select_on", "val", "--select_every", "-1"], "--select_every must be >= 0"),
    (["--select_on", "val", "--n_iters", "0"], "--select_on val: --n_iters 0 trains no step"),
    (["--select_on", "val", "--eval_only", "--save_path", "x"], "--select_on val chooses among the training steps"),
    (["--select_on", "val", "--resume"], "--select_on val with --resume"),
    (["--select_on", "test"], "--select_on: invalid choice: 'test'"),
    (["--mode", "adalora", "--select_on", "val"], "--select_on val: --mode adalora prunes its ranks"),
    (["--mode", "linear_probe", "--select_on", "val"], "--select_on val: --mode linear_probe is a baseline"),
])
def test_bad_evaluation_flags_fail_naming_the_flag(argv, message, capsys):
    """--ood_datasets, --interpolate, --select_on and --select_every (docs/evaluation.md), before anything loads."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_new_evaluation_flags_change_a_runs_key_only_when_set():
    """Runs recorded before --ood_datasets, --interpolate and --select_on existed, and runs that leave them alone,
    keep their identity and key (tests/golden pins them); set, each is part of the identity."""
    plain = run_spec(parse_args([]))
    assert not {"ood_datasets", "interpolate", "select_on", "select_every"} & set(plain.identity)
    for argv in (["--ood_datasets", "ood_sun"], ["--interpolate", "0", "1"], ["--select_on", "val"]):
        spec = run_spec(parse_args(argv))
        assert argv[0][2:] in spec.identity
        assert spec.key != plain.key
    assert "select_on" in run_spec(parse_args(["--select_on", "val"])).trained_identity
