"""A run's identity decides where it writes and what counts as done: never two runs in one folder,
never an adapter evaluated under flags or on a base it was not trained with (main.py end to end)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import make_color_folder

import main
from qlora_clip.errors import UserError
from qlora_clip.tiny_clip import tiny_checkpoint_dir
from run_utils import parse_args, run_spec
from sweep import main as sweep_main


def test_two_image_folders_are_two_datasets_for_paths_resume_and_the_sweep(tiny_argv, tmp_path, capsys):
    other = make_color_folder(tmp_path / "other" / "colors", seed=1)  # same class and file names
    mine = tiny_argv("--save_path", str(tmp_path / "ckpt"))
    theirs = [*mine[:mine.index("--root_path") + 1], str(other), *mine[mine.index("--root_path") + 2:]]
    first, second = run_spec(parse_args(mine)), run_spec(parse_args(theirs))
    assert first.key != second.key and first.dataset_tag != second.dataset_tag
    assert first.adapter_dir != second.adapter_dir and first.checkpoint_path != second.checkpoint_path
    assert first.subset_path != second.subset_path
    # The same folder named relatively is the same dataset.
    at = mine.index("--root_path") + 1
    relative = [*mine[:at], os.path.relpath(mine[at]), *mine[at + 1:]]
    assert run_spec(parse_args(relative)).key == first.key

    record = main.main(mine)
    assert Path(record["subset_file"]) == first.subset_path and Path(record["adapter_dir"]) == first.adapter_dir
    # A sweep over the other folder does not take the finished run for its own.
    common = ["--mode", "lora", "--datasets", "folder", "--shots", "4", "--seeds", "1", "--backbone", "tiny",
              "--results_file", str(tmp_path / "results.jsonl"), "--log_dir", str(tmp_path / "logs"),
              "--extra_args", "--n_iters 1 --batch_size 8", "--dry-run"]
    assert sweep_main([*common, "--root_path", mine[mine.index("--root_path") + 1]]) == 0
    assert "done  lora folder 4-shot seed 1" in capsys.readouterr().out
    assert sweep_main([*common, "--root_path", str(other)]) == 0
    assert "todo  lora folder 4-shot seed 1" in capsys.readouterr().out


def test_other_settings_save_their_own_adapter(tiny_argv, tmp_path):
    save = ("--save_path", str(tmp_path / "ckpt"))
    r2 = main.main(tiny_argv(*save))
    r4 = main.main(tiny_argv(*save, "--r", "4"))
    assert r2["adapter_dir"] != r4["adapter_dir"]
    assert Path(r2["adapter_dir"]).parent == Path(r4["adapter_dir"]).parent  # side by side, readable
    for record in (r2, r4):
        saved = json.loads((Path(record["adapter_dir"]) / "run.json").read_text())
        assert saved["config"]["r"] == record["config"]["r"]


def test_eval_only_refuses_flags_the_adapter_was_not_trained_with(tiny_argv, tmp_path):
    save = ("--save_path", str(tmp_path / "ckpt"))
    trained = main.main(tiny_argv(*save))
    for ignored in (("--lr", "0.1"), ("--n_iters", "99")):
        with pytest.raises(UserError, match=rf"saved with other settings \(lora-.*: {ignored[0]} "):
            main.main(tiny_argv(*save, "--eval_only", *ignored))
    # Evaluation-only flags are the evaluation's own; the line records the trained configuration.
    evaluated = main.main(tiny_argv(*save, "--eval_only"))
    assert evaluated["test_acc"] == trained["test_acc"]
    trained_config = {k: v for k, v in trained["config"].items() if k != "eval_only"}
    assert {k: v for k, v in evaluated["config"].items() if k != "eval_only"} == trained_config


def test_eval_only_refuses_an_adapter_trained_on_another_base(tiny_argv, tmp_path):
    # The same --backbone folder, whose checkpoint was replaced after training (another fine-tune
    # saved over it, say): the flags are equal, the base is not.
    base = tmp_path / "base"
    shutil.copytree(tiny_checkpoint_dir(), base)
    argv = tiny_argv("--save_path", str(tmp_path / "ckpt"))
    argv[argv.index("--backbone") + 1] = str(base)
    main.main(argv)
    config = json.loads((base / "config.json").read_text())
    config["logit_scale_init_value"] = 3.0
    (base / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"trained on the base .*base, whose files differ from --backbone"):
        main.main([*argv, "--eval_only"])
