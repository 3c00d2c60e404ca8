"""--eval_datasets (cross-dataset transfer, domain generalization) and the protocol flags' validation."""
from __future__ import annotations

import dataset_trees as trees
import pytest

import main
from qlora_clip import schema
from qlora_clip.errors import UserError
from qlora_clip.results import comparable_config
from run_utils import flag_defaults, parse_args


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


def test_protocol_flags_tell_runs_apart_and_default_for_older_lines():
    plain = comparable_config(vars(parse_args(["--dataset", "imagenet"])), flag_defaults())
    assert plain == comparable_config({k: v for k, v in plain.items() if k not in ("protocol", "eval_datasets")}, flag_defaults())
    assert plain != comparable_config(vars(parse_args(["--dataset", "imagenet", "--protocol", "base2new"])), flag_defaults())
    assert plain != comparable_config(vars(parse_args(["--dataset", "imagenet", "--eval_datasets", "imagenet_a"])), flag_defaults())


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    trees.build("dtd", root)
    trees.build("eurosat", root)
    trees.build_variant("imagenet_a", root)
    return root


def argv(root, tmp_path, *extra: str) -> list[str]:
    return ["--backbone", "tiny", "--dataset", "dtd", "--root_path", str(root), "--shots", "2", "--batch_size", "4",
            "--lr", "1e-2", "--results_file", str(tmp_path / "results.jsonl"), "--eval_datasets", "eurosat",
            "imagenet_a", *extra]


def test_adapter_is_evaluated_on_each_target_with_its_own_classes(data_root, tmp_path, monkeypatch):
    seen = []
    real_accuracy = main.Evaluator.accuracy

    def recording(self, test, desc="test"):
        seen.append((test.name, len(test.prompts), len(test.items)))
        return real_accuracy(self, test, desc)

    monkeypatch.setattr(main.Evaluator, "accuracy", recording)
    save = ["--save_path", str(tmp_path / "ckpt"), "--n_iters", "2"]
    record = main.main(argv(data_root, tmp_path, *save))

    dtd_test = 3 * trees.PER_CLASS["test"]
    eurosat_test = 3 * trees.PER_CLASS["test"]
    imagenet_a_test = 4 * trees.VARIANT_IMAGES
    assert seen == [("dtd", 3, dtd_test), ("dtd", 3, dtd_test),                       # zero-shot, then trained
                    ("eurosat", 3, eurosat_test), ("eurosat", 3, eurosat_test),
                    ("imagenet_a", 4, imagenet_a_test), ("imagenet_a", 4, imagenet_a_test)]
    assert record["protocol"] == "fewshot"
    assert list(record["eval_datasets"]) == ["eurosat", "imagenet_a"]
    assert set(record) == schema.expected_names(record) and "eval_datasets" in schema.expected_names(record)
    schema.check(record)
    for accs in record["eval_datasets"].values():
        assert set(accs) == {"test_acc", "zero_shot_acc"} and all(0 <= v <= 100 for v in accs.values())

    # Zero-shot does not depend on training: the same as in a run that does not train.
    untrained = main.main(argv(data_root, tmp_path, "--n_iters", "0"))
    for name, accs in untrained["eval_datasets"].items():
        assert accs["zero_shot_acc"] == record["eval_datasets"][name]["zero_shot_acc"] == accs["test_acc"]

    # --eval_only on the saved adapter gives the trained run's numbers again.
    evaluated = main.main(argv(data_root, tmp_path, *save, "--eval_only"))
    assert evaluated["eval_datasets"] == record["eval_datasets"] and evaluated["total_steps"] == 0


def test_missing_target_stops_the_run_before_training(tmp_path, monkeypatch):
    root = tmp_path / "data"
    trees.build("dtd", root)
    monkeypatch.setattr(main, "train", lambda *a, **k: pytest.fail("trained although a target is missing"))
    with pytest.raises(UserError, match=r"^--eval_datasets eurosat: .*eurosat/2750 not found"):
        main.main(argv(root, tmp_path))
