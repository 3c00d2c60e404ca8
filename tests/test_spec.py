"""qlora_clip/spec.py: RunSpec, a run as one value; its names and paths, and which settings share them."""
from __future__ import annotations

from pathlib import Path

from run_utils import parse_args, run_spec


def test_adapter_dir_layout():
    args = parse_args(["--save_path", "ckpt", "--backbone", "ViT-B/16", "--dataset", "dtd",
                       "--shots", "4", "--seed", "3", "--mode", "qdora"])
    assert run_spec(args).adapter_dir == Path("ckpt/ViT-B-16/dtd/4shots/seed3/qdora")


def test_base2new_runs_keep_their_own_adapter_and_subset_paths():
    fewshot = parse_args(["--dataset", "dtd", "--save_path", "ckpt", "--results_file", "r/x.jsonl"])
    base2new = parse_args(["--dataset", "dtd", "--save_path", "ckpt", "--results_file", "r/x.jsonl",
                           "--protocol", "base2new"])
    assert str(run_spec(fewshot).adapter_dir) == "ckpt/ViT-B-16/dtd/16shots/seed1/lora"
    assert str(run_spec(base2new).adapter_dir) == "ckpt/ViT-B-16/dtd/base2new/16shots/seed1/lora"
    assert str(run_spec(fewshot).subset_path) == "r/subsets/dtd_16shots_seed1.json"
    assert str(run_spec(base2new).subset_path) == "r/subsets/dtd_base2new_16shots_seed1.json"
