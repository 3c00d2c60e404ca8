"""2SFS (qlora_clip/methods/two_stage.py): its two stages and their switch point through the shared loop (what
each trains, its own cosine, the stream it reads, the classifier it starts from), the selective rule for classes
without a row, and a base-to-novel run through main.py that reloads to the same accuracies
(tests/test_methods_training.py runs its few-shot step, save and reload; test_methods_quantized.py its 4-bit one)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import main
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.methods.interface import load_adapted
from qlora_clip.methods.table import METHODS
from qlora_clip.methods.two_stage import TwoStage, stage_steps
from qlora_clip.paper import MIN_LR
from qlora_clip.run import schema
from run_utils import parse_args, run_spec

CPU = torch.device("cpu")


@pytest.mark.parametrize("shots, expected", [(1, (180, 120)), (2, (360, 240)), (4, (720, 480)), (8, (1440, 960)),
                                             (16, (2880, 1920))])
def test_the_published_schedule_splits_300_steps_per_shot_60_40(shots, expected):
    assert stage_steps(METHODS["2sfs"].published["n_iters"] * shots) == expected


def test_stage_one_is_the_truncated_fraction():
    assert stage_steps(3, fraction=0.5) == (1, 2)  # 1.5 -> 1: Python's int, as the official code
    assert stage_steps(10, fraction=0.7) == (7, 3)  # 0.7 x 10 = 7.000000000000001 in floating point
    assert stage_steps(1) == (0, 1)


def test_resuming_across_the_switch_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--mode", "2sfs", "--checkpoint_every", "10"])
    assert "--checkpoint_every 10: --mode 2sfs cannot resume" in capsys.readouterr().err


def cosine(step: int, lr: float, steps: int) -> float:
    return MIN_LR + (lr - MIN_LR) * (1 + math.cos(math.pi * step / steps)) / 2


@pytest.fixture(scope="module")
def run(color_folder, tmp_path_factory):
    """A base-to-novel run (2 base classes x 2 shots, batch 4: one step per epoch; 5 x 2 = 10 steps, 6 then 4),
    each call of the shared loop recorded, then its --eval_only."""
    tmp = tmp_path_factory.mktemp("2sfs")
    argv = ["--backbone", "tiny", "--dataset", "folder", "--root_path", str(color_folder), "--shots", "2",
            "--n_iters", "5", "--batch_size", "4", "--lr", "1e-2", "--mode", "2sfs", "--protocol", "base2new",
            "--results_file", str(tmp / "results.jsonl"), "--save_path", str(tmp / "saved")]
    calls, real = [], main.train

    def recording(adapted, stream, prompts, config, precision, dist, checkpoint, resume, desc, on_step):
        call = {"steps": config.total_steps, "first_step": config.first_step, "lrs": [],
                "trained": {id(p) for p in adapted.trained_parameters()},
                "norms": {n: id(p) for n, p in adapted.model.named_parameters() if n in adapted.originals},
                "seeds": [seed for _, seed in stream.sampler.step_batch(0)],
                "classifier": None if adapted.classifier is None else adapted.classifier.detach().clone(),
                "text": F.normalize(prompts.features(adapted.model), dim=-1).detach(),
                "state": {n: p.detach().clone() for n, p in adapted.model.named_parameters() if n in adapted.originals}}
        calls.append(call)
        result = real(adapted, stream, prompts, config, precision, dist, checkpoint, resume=resume, desc=desc,
                      on_step=[*on_step, lambda record: call["lrs"].append(record.lr)])
        call["after"] = {n: p.detach().clone() for n, p in adapted.model.named_parameters() if n in adapted.originals}
        call["adapted"] = adapted
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(main, "train", recording)
        record = main.main(argv)
    return argv, record, calls, main.main([*argv, "--eval_only"])


def test_two_calls_of_the_shared_loop_switch_after_int_0_6_of_the_steps(run):
    _, record, calls, _ = run
    assert [(c["steps"], c["first_step"]) for c in calls] == [(6, 0), (4, 6)]
    assert record["total_steps"] == 10
    assert record["train_images_seen"] == 10 * 4


def test_each_stage_has_its_own_cosine_from_the_learning_rate(run):
    _, _, (first, second), _ = run
    assert first["lrs"] == pytest.approx([cosine(k, 1e-2, 6) for k in range(6)], rel=1e-9)
    assert second["lrs"] == pytest.approx([cosine(k, 1e-2, 4) for k in range(4)], rel=1e-9)  # restarts at 1e-2


def test_stage_one_trains_the_layer_norms_and_stage_two_only_the_classifier(run):
    _, _, (first, second), _ = run
    adapted = second["adapted"]
    assert first["trained"] == set(first["norms"].values())  # every per-block LayerNorm weight and bias
    assert first["classifier"] is None
    assert second["trained"] == {id(adapted.classifier)}
    assert any(not torch.equal(first["state"][n], first["after"][n]) for n in first["state"])  # stage 1 moved them
    assert all(torch.equal(second["state"][n], second["after"][n]) for n in second["state"])  # stage 2 did not
    assert not torch.equal(second["classifier"], adapted.classifier.detach())  # the classifier trained


def test_the_classifier_starts_from_the_stage_one_text_features(run):
    _, _, (_, second), _ = run
    # the class prompts' features through the LayerNorms as stage 1 left them, normalised
    torch.testing.assert_close(second["classifier"], second["text"], rtol=0, atol=1e-6)


def test_stage_two_continues_the_runs_stream_of_batches(run):
    _, _, (first, second), _ = run
    # step 0 of stage 2 is the run's step 6: augmentation seeds after stage 1's 6 x 4 images
    assert second["seeds"][0] - first["seeds"][0] == 6 * 4


def test_base_to_novel_reloads_to_the_same_accuracies(run):
    _, record, _, evaluated = run
    schema.check(record)
    assert record["adapter_params"] == 24 * 2 * 64 + 2 * 64  # 24 LayerNorms of 64, and 2 base classes x 64
    assert record["peft_config"]["classifier"] == [2, 64]
    for name in ("test_acc", "base_acc", "new_acc", "zero_shot_base_acc", "zero_shot_new_acc"):
        assert evaluated[name] == record[name], name


def test_classes_without_a_row_go_through_the_stage_one_text_tower(run):
    argv, _, _, _ = run
    spec = run_spec(parse_args(argv))
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32, saved=spec.adapter_dir)
    assert isinstance(adapted, TwoStage)
    known = sorted(adapted.rows, key=adapted.rows.get)
    tokenizer = adapted.bundle.tokenizer
    new = ClassPrompts(tokenizer, ["a photo of a violet.", "a photo of a cyan."], CPU)
    mixed = ClassPrompts(tokenizer, [new.prompts[0], known[1], new.prompts[1], known[0]], CPU)
    with torch.no_grad():
        rows = F.normalize(adapted.classifier, dim=-1)
        tower = new.features(adapted.model)
        got = adapted.text_features(mixed)
        assert torch.equal(got[1], rows[1])
        assert torch.equal(got[3], rows[0])
        torch.testing.assert_close(got[[0, 2]], tower)
        with adapted.zero_shot_view():  # the pretrained LayerNorms and the plain prompts
            zero_shot = adapted.text_features(mixed)
    assert not torch.allclose(zero_shot[1], got[1])
