"""qlora_clip/saved_adapter.py: --save_path's adapter folders, and the checks --eval_only makes before it
loads one (through main.py; check_saved_run's unit tests follow)."""
from __future__ import annotations

from pathlib import Path

import pytest

import main
from qlora_clip.errors import UserError
from run_utils import parse_args, run_spec


@pytest.mark.parametrize("mode", ["lora", "qdora"])
def test_saved_adapter_reproduces_its_accuracy_with_eval_only(mode, tiny_argv, tmp_path):
    save = ["--save_path", str(tmp_path / "ckpt"), "--mode", mode, "--lr", "1e-2", "--n_iters", "2"]
    trained = main.main(tiny_argv(*save))
    folder = Path(trained["adapter_dir"])
    assert folder == run_spec(parse_args(tiny_argv(*save))).adapter_dir
    assert (folder / "adapter_model.safetensors").exists() and (folder / "adapter_config.json").exists()
    evaluated = main.main(tiny_argv(*save, "--eval_only"))
    assert evaluated["test_acc"] == trained["test_acc"]
    assert evaluated["total_steps"] == 0 and evaluated["zero_shot_acc"] == trained["zero_shot_acc"]


def test_eval_only_refuses_a_missing_or_mismatched_adapter(tiny_argv, tmp_path):
    save = ["--save_path", str(tmp_path / "ckpt")]
    with pytest.raises(UserError, match=r"--eval_only: no saved adapter at .*Train with the same flags"):
        main.main(tiny_argv(*save, "--eval_only"))
    main.main(tiny_argv(*save))
    with pytest.raises(UserError, match=r"saved with other settings \(lora-.*: --r 2 \(flags: 4\)\)"):
        main.main(tiny_argv(*save, "--eval_only", "--r", "4"))
    with pytest.raises(UserError, match=r"--params \['q', 'k', 'v'\] \(flags: \['q'\]\)"):
        main.main(tiny_argv(*save, "--eval_only", "--params", "q"))
