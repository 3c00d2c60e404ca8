"""qlora_clip/spec.py: RunSpec, a run as one value; its names and paths, and which settings share them."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import make_color_folder

import main
from run_utils import parse_args, run_spec
from sweep import main as sweep_main


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


def spec(*flags: str):
    return run_spec(parse_args(list(flags)))


def test_names_and_paths_at_the_default_settings():
    run = spec("--dataset", "dtd", "--shots", "4", "--mode", "qlora")
    assert run.name == "qlora-dtd-4shot-seed1"
    assert run.tracking.run_name == run.name
    assert run.subdir == Path("ViT-B-16/dtd/4shots/seed1/qlora")
    assert run.adapter_dir is None  # nothing is saved without --save_path
    assert run.checkpoint_path == Path("checkpoints/ViT-B-16/dtd/4shots/seed1/qlora/train_state.pt")
    assert run.subset_path == Path("results/subsets/dtd_4shots_seed1.json")
    assert run.log_file("logs") == Path("logs/ViT-B-16/dtd/4shots/seed1/qlora.log")


def test_names_and_paths_under_other_settings_carry_the_changed_flags_and_their_digest():
    run = spec("--dataset", "dtd", "--shots", "16", "--seed", "3", "--protocol", "base2new", "--r", "4",
               "--lr", "1e-3", "--save_path", "ckpt", "--checkpoint_dir", "ck", "--results_file", "out/r.jsonl")
    assert run.name == "lora-dtd-base2new-16shot-seed3"
    assert re.fullmatch(r"lora-lr0\.001-r4-[0-9a-f]{6}", run.variant), run.variant
    assert run.subdir == Path("ViT-B-16/dtd/base2new/16shots/seed3") / run.variant
    assert run.adapter_dir == Path("ckpt") / run.subdir
    assert run.checkpoint_path == Path("ck") / run.subdir / "train_state.pt"
    assert run.subset_path == Path("out/subsets/dtd_base2new_16shots_seed3.json")  # the draw's, not the method's
    assert run.log_file("logs") == Path("logs/ViT-B-16/dtd/base2new/16shots/seed3") / f"{run.variant}.log"


TRAINING_CHANGES = [["--r", "4"], ["--alpha", "2"], ["--lr", "1e-3"], ["--n_iters", "100"], ["--encoder", "vision"],
                    ["--position", "top"], ["--params", "q", "v"], ["--r", "4", "--alpha", "2"]]


def test_settings_that_train_different_adapters_never_share_a_folder():
    base = ["--dataset", "dtd", "--save_path", "ckpt"]
    runs = [spec(*base)] + [spec(*base, *change) for change in TRAINING_CHANGES]
    assert len({run.adapter_dir for run in runs}) == len(runs)
    assert len({run.checkpoint_path for run in runs}) == len(runs)
    assert len({run.key for run in runs}) == len(runs)
    # Cut to the same readable text, the two folders still differ by their digest.
    many = ["--alpha", "2", "--lr", "1e-3", "--n_iters", "100", "--encoder", "vision", "--position", "top"]
    r4, r8 = spec(*base, *many, "--r", "4"), spec(*base, *many, "--r", "8")
    assert r4.variant.rsplit("-", 1)[0] == r8.variant.rsplit("-", 1)[0]
    assert r4.adapter_dir != r8.adapter_dir


@pytest.mark.parametrize("evaluation_only", [["--eval_datasets", "eurosat"], ["--eval_only"],
                                             ["--gradient_checkpointing"]])
def test_evaluation_only_flags_share_the_adapter_folder_and_training_state(evaluation_only):
    base = ["--dataset", "dtd", "--save_path", "ckpt"]
    plain, other = spec(*base), spec(*base, *evaluation_only)
    assert other.adapter_dir == plain.adapter_dir == Path("ckpt/ViT-B-16/dtd/16shots/seed1/lora")
    assert other.checkpoint_path == plain.checkpoint_path
    assert other.trained_identity == plain.trained_identity
    assert other.key != plain.key  # still another run: its results line is not the plain run's


def test_own_image_folders_are_told_apart_by_where_they_are(tmp_path, monkeypatch):
    for folder in ("a", "b", "x/imgs", "y/imgs"):
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)

    def folder_run(root: str):
        return spec("--dataset", "folder", "--root_path", root, "--save_path", "ckpt")

    a, b = folder_run(str(tmp_path / "a")), folder_run(str(tmp_path / "b"))
    assert re.fullmatch(r"folder-a-[0-9a-f]{6}", a.dataset_tag)
    assert a.dataset_tag != b.dataset_tag
    assert a.identity != b.identity
    assert a.adapter_dir != b.adapter_dir
    assert a.subset_path != b.subset_path
    x, y = folder_run("x/imgs"), folder_run("y/imgs")  # same folder name, different places
    assert x.dataset_tag != y.dataset_tag
    assert x.key != y.key
    relative = folder_run("a")
    assert relative.dataset_tag == a.dataset_tag
    assert relative.identity == a.identity
    assert relative.key == a.key
    assert relative.adapter_dir == a.adapter_dir


def test_two_runs_have_the_same_key_exactly_when_they_have_the_same_identity(tmp_path):
    runs = [spec("--dataset", "dtd"), spec("--dataset", "dtd", "--num_workers", "2"),      # bookkeeping only
            spec("--dataset", "dtd", "--root_path", str(tmp_path), "--results_file", "elsewhere/r.jsonl"),
            spec("--dataset", "dtd", "--seed", "2"), spec("--dataset", "eurosat"),
            spec("--dataset", "folder", "--root_path", str(tmp_path)),
            spec("--dataset", "folder", "--root_path", str(tmp_path / ".." / tmp_path.name))]
    runs += [spec("--dataset", "dtd", *change) for change in TRAINING_CHANGES]
    same_identity = {(i, j) for i, a in enumerate(runs) for j, b in enumerate(runs) if a.identity == b.identity}
    same_key = {(i, j) for i, a in enumerate(runs) for j, b in enumerate(runs) if a.key == b.key}
    assert same_key == same_identity
    assert {(0, 1), (0, 2), (5, 6)} <= same_key
    assert (0, 3) not in same_key  # both cases occur


# --- through main.py: folders, checkpoints, subsets and the sweep follow the identity -------------

def test_two_image_folders_are_two_datasets_for_paths_resume_and_the_sweep(tiny_argv, tmp_path, capsys):
    other = make_color_folder(tmp_path / "other" / "colors", seed=1)  # same class and file names
    mine = tiny_argv("--save_path", str(tmp_path / "ckpt"))
    theirs = [*mine[:mine.index("--root_path") + 1], str(other), *mine[mine.index("--root_path") + 2:]]
    first, second = run_spec(parse_args(mine)), run_spec(parse_args(theirs))
    assert first.key != second.key
    assert first.dataset_tag != second.dataset_tag
    assert first.adapter_dir != second.adapter_dir
    assert first.checkpoint_path != second.checkpoint_path
    assert first.subset_path != second.subset_path
    # The same folder named relatively is the same dataset.
    at = mine.index("--root_path") + 1
    relative = [*mine[:at], os.path.relpath(mine[at]), *mine[at + 1:]]
    assert run_spec(parse_args(relative)).key == first.key

    record = main.main(mine)
    assert Path(record["subset_file"]) == first.subset_path
    assert Path(record["adapter_dir"]) == first.adapter_dir
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

def test_a_split_file_is_part_of_the_identity_by_its_lists_not_only_its_name(tmp_path, monkeypatch):
    """Two different files under the same name are two runs (identity, key, adapter folder, subset file), and a
    results line of one does not make the sweep count the other as done; the same file is the same run."""
    import dataset_trees as trees

    from qlora_clip.run.results import append_jsonl, recorded_configs
    from run_utils import flag_defaults

    tree = trees.build("dtd", tmp_path / "DATA")
    first, second, copy = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    picked = trees.hand_picked(tree, "train", 2)
    trees.write_2sfs_pair(first, "shot_2-seed_1", picked, None, tree.classnames)
    trees.write_2sfs_pair(second, "shot_2-seed_1", list(reversed(picked)), None, tree.classnames)
    trees.write_2sfs_pair(copy, "shot_2-seed_1", picked, None, tree.classnames, prefix="/other/dtd/images")
    argv = ["--dataset", "dtd", "--root_path", str(tree.root), "--shots", "2", "--save_path", "ck",
            "--results_file", str(tmp_path / "r.jsonl"), "--split_file", "shot_2-seed_1_train.jsonl"]
    runs = {}
    for folder in (first, second, copy):
        monkeypatch.chdir(folder)  # the same name, relative to where each run starts
        runs[folder.name] = spec(*argv)
    a, b, c = runs["a"], runs["b"], runs["c"]
    assert a.flags["split_file"] == b.flags["split_file"]
    assert a.identity != b.identity
    assert a.key != b.key
    assert a.adapter_dir != b.adapter_dir
    assert a.subset_path != b.subset_path
    assert a.identity == c.identity  # the same images, written on another machine: the same run
    assert "split_file" not in a.identity
    append_jsonl(tmp_path / "r.jsonl", {"mode": "lora", "dataset": "dtd", "shots": 2, "seed": 1,
                                         "backbone": "ViT-B/16", "config": dict(a.flags)})
    done = recorded_configs(tmp_path / "r.jsonl", flag_defaults())[0]
    assert a.identity in done
    assert b.identity not in done

    ours = spec(*argv[:-2])  # our own draw: no digest, its identity, subset file and folder as before the flag
    assert "split_file" not in ours.identity  # the path is bookkeeping; the digest is the identity
    assert "split_file_digest" not in ours.identity
    assert ours.subset_path.name == "dtd_2shots_seed1.json"
    assert a.subset_path.name.startswith("dtd_2shots_seed1_split-")
