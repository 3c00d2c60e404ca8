"""What the code's structure must never change: run names, folders and digests, recorded configs, and the
adapters LoRA, QLoRA, DoRA and QDoRA save (bit for bit), pinned from the code before the restructuring
(tests/golden/*.json, written by running these same calls on that code)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import make_color_folder

import main
from qlora_clip.evaluation.settings import default_eval_cache_dir
from run_utils import parse_args, run_spec

GOLDEN = Path(__file__).resolve().parent / "golden"
SPECS = json.loads((GOLDEN / "run_specs.json").read_text())
ADAPTERS = json.loads((GOLDEN / "adapters.json").read_text())


def describe(argv: list[str]) -> dict:
    s = run_spec(parse_args(argv))
    return {"argv": argv, "name": s.name, "variant": s.variant, "subdir": str(s.subdir), "key": s.key,
            "identity": s.identity, "trained_identity": s.trained_identity,
            "checkpoint_path": str(s.checkpoint_path), "subset_path": str(s.subset_path),
            "adapter_dir": str(s.adapter_dir), "log_file": str(s.log_file("logs")),
            "tracking_name": s.tracking.run_name, "config": _config(s.flags)}


def _config(flags) -> dict:
    """The recorded flags, the default cache folder (it follows $QLORA_CLIP_CACHE) written as '<default>'."""
    config = json.loads(json.dumps(dict(flags)))
    if config["eval_cache_dir"] == str(default_eval_cache_dir()):
        config["eval_cache_dir"] = "<default>"
    return config


@pytest.mark.parametrize("golden", SPECS, ids=lambda g: " ".join(g["argv"]) or "defaults")
def test_names_folders_digests_and_recorded_flags_are_unchanged(golden, monkeypatch):
    monkeypatch.chdir("/tmp")  # the golden file was written there (relative paths resolve alike)
    assert describe(golden["argv"]) == golden


@pytest.fixture(scope="module")
def saved_adapters(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("golden")
    folder = make_color_folder(tmp / "colors", per_class=6, size=32, seed=0)
    out = {}
    for mode in ADAPTERS:
        record = main.main(["--backbone", "tiny", "--dataset", "folder", "--root_path", str(folder), "--shots", "2",
                            "--n_iters", "2", "--batch_size", "4", "--mode", mode, "--save_path", str(tmp / "ck"),
                            "--results_file", str(tmp / "r.jsonl"), "--eval_cache_dir", ""])
        weights = Path(record["adapter_dir"]) / "adapter_model.safetensors"
        out[mode] = {"sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "test_acc": record["test_acc"],
                     "final_loss": record["final_loss"], "keys": sorted(record)}
    return out


@pytest.mark.parametrize("mode", list(ADAPTERS))
def test_the_four_methods_save_bit_identical_adapters_and_the_same_line(saved_adapters, mode):
    got, want = saved_adapters[mode], ADAPTERS[mode]
    assert got["sha256"] == want["sha256"]
    assert got["keys"] == want["keys"]
    assert got["final_loss"] == want["final_loss"]
    assert got["test_acc"] == want["test_acc"]
