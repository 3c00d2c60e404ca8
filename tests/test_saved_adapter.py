"""qlora_clip/run/saved_adapter.py: --save_path's adapter folders, and the checks --eval_only makes before it
loads one (through main.py; check_saved_run's unit tests follow)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import main
from qlora_clip.run import saved_adapter
from qlora_clip.errors import UserError
from qlora_clip.backbones.loading import resolve_backbone
from qlora_clip.backbones.tiny_clip import tiny_checkpoint_dir
from run_utils import parse_args, run_spec


@pytest.mark.parametrize("mode", ["lora", "qdora"])
def test_saved_adapter_reproduces_its_accuracy_with_eval_only(mode, tiny_argv, tmp_path):
    save = ["--save_path", str(tmp_path / "ckpt"), "--mode", mode, "--lr", "1e-2", "--n_iters", "2"]
    trained = main.main(tiny_argv(*save))
    folder = Path(trained["adapter_dir"])
    assert folder == run_spec(parse_args(tiny_argv(*save))).adapter_dir
    assert (folder / "adapter_model.safetensors").exists()
    assert (folder / "adapter_config.json").exists()
    evaluated = main.main(tiny_argv(*save, "--eval_only"))
    assert evaluated["test_acc"] == trained["test_acc"]
    assert evaluated["total_steps"] == 0
    assert evaluated["zero_shot_acc"] == trained["zero_shot_acc"]


def test_eval_only_refuses_a_missing_or_mismatched_adapter(tiny_argv, tmp_path):
    save = ["--save_path", str(tmp_path / "ckpt")]
    with pytest.raises(UserError, match=r"--eval_only: no saved adapter at .*Train with the same flags"):
        main.main(tiny_argv(*save, "--eval_only"))
    main.main(tiny_argv(*save))
    with pytest.raises(UserError, match=r"saved with other settings \(lora-.*: --r 2 \(flags: 4\)\)"):
        main.main(tiny_argv(*save, "--eval_only", "--r", "4"))
    with pytest.raises(UserError, match=r"--params \['q', 'k', 'v'\] \(flags: \['q'\]\)"):
        main.main(tiny_argv(*save, "--eval_only", "--params", "q"))


# --- check_saved_run on its own --------------------------------------------------------------------

HUB_BASE = "openai/clip-vit-base-patch16"  # what --backbone ViT-B/16 resolves to; its fingerprint is the id


class FakeAdapted:
    """A method whose `save` (methods/interface.Adapted.save) writes the files PEFT's save_pretrained writes,
    without a model."""

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_config.json").write_text("{}")
        (folder / "adapter_model.safetensors").write_bytes(b"")


def saved_run(tmp_path, monkeypatch, *flags: str, base_model: str = HUB_BASE):
    """The spec of a run with `flags` whose adapter saved_adapter.save has written (model card left out)."""
    monkeypatch.setattr(saved_adapter, "write_model_card", lambda *args: None)
    args = parse_args(["--dataset", "dtd", "--save_path", str(tmp_path / "ckpt"), *flags])
    spec = run_spec(args)
    record = {"mode": spec.method, "config": vars(args), "test_acc": 61.5}
    saved_adapter.save(FakeAdapted(), record, spec.adapter_dir, base_model, "a photo of a {}.")
    return spec


def eval_only(tmp_path, *flags: str):
    return run_spec(parse_args(["--dataset", "dtd", "--save_path", str(tmp_path / "ckpt"), "--eval_only", *flags]))


def test_the_adapter_saved_with_the_same_flags_passes_and_gives_its_record(tmp_path, monkeypatch):
    trained = saved_run(tmp_path, monkeypatch, "--r", "4")
    saved = saved_adapter.check_saved_run(eval_only(tmp_path, "--r", "4", "--eval_datasets", "eurosat"), HUB_BASE)
    assert saved["test_acc"] == 61.5
    assert saved["adapter_dir"] == str(trained.adapter_dir)
    assert saved["base_model"] == HUB_BASE
    assert saved["base_fingerprint"] == HUB_BASE


def test_no_folder_at_all_says_to_train_first(tmp_path):
    with pytest.raises(UserError, match=r"^--eval_only: no saved adapter at .*ckpt/ViT-B-16/dtd/16shots/seed1/lora "
                                        r"\(adapter files and run.json expected\)\. Train with the same flags"):
        saved_adapter.check_saved_run(eval_only(tmp_path), HUB_BASE)


def test_adapters_saved_with_other_settings_are_listed_with_the_flags_they_differ_in(tmp_path, monkeypatch):
    r4 = saved_run(tmp_path, monkeypatch, "--r", "4")
    lr = saved_run(tmp_path, monkeypatch, "--lr", "1e-3", "--position", "top")
    saved_run(tmp_path, monkeypatch, "--mode", "qlora")  # another method: not listed
    broken = lr.adapter_dir.with_name("lora-broken")
    broken.mkdir()
    (broken / "run.json").write_text("{")  # unreadable: skipped in the list
    with pytest.raises(UserError) as refused:
        saved_adapter.check_saved_run(eval_only(tmp_path, "--alpha", "2"), HUB_BASE)
    message = str(refused.value)
    assert message.startswith("--eval_only: no adapter trained with these flags at ")
    listed = message.split("saved with other settings (")[1].split("). Pass the flags")[0]
    assert listed.split("; ") == sorted([
        f"{r4.adapter_dir.name}: --alpha 1.0 (flags: 2.0), --r 4 (flags: 2)",
        f"{lr.adapter_dir.name}: --alpha 1.0 (flags: 2.0), --lr 0.001 (flags: 0.0002), --position top (flags: all)"])


def test_a_base_checkpoint_whose_files_changed_since_training_is_refused_naming_both(tmp_path, monkeypatch):
    base = tmp_path / "my-clip"
    shutil.copytree(resolve_backbone("tiny"), base)
    saved_run(tmp_path, monkeypatch, "--backbone", str(base), base_model=str(base))
    same = eval_only(tmp_path, "--backbone", str(base))
    assert saved_adapter.check_saved_run(same, str(base))["base_model"] == str(base)
    config = base / "config.json"
    config.write_text(config.read_text().replace("\n", "\n "))  # same model, but no longer the same files
    at = re.escape(str(base))
    with pytest.raises(UserError, match=rf"trained on the base {at}, whose files differ from --backbone {at} "
                                        rf"\({at}\) now; evaluate it on the checkpoint it was trained on"):
        saved_adapter.check_saved_run(same, str(base))


@pytest.mark.parametrize("content, error", [("{not json", "JSONDecodeError"), ('{"test_acc": 61.5}', "KeyError"),
                                            ("[1, 2]", "TypeError")])
def test_an_unreadable_run_json_is_a_clear_error(content, error, tmp_path, monkeypatch):
    spec = saved_run(tmp_path, monkeypatch)
    (spec.adapter_dir / "run.json").write_text(content)
    with pytest.raises(UserError, match=rf"^--eval_only: .*run\.json is unreadable \({error}\); the adapter cannot "
                                        r"be checked against the flags\. Train it again with --save_path\.$"):
        saved_adapter.check_saved_run(eval_only(tmp_path), HUB_BASE)


# --- through main.py: --eval_only refuses what the adapter was not trained with -------------------

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
