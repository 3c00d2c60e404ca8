"""CLAP (qlora_clip/methods/baselines/clap.py): the class-adaptive multipliers and the constraint's penalty by hand,
multipliers fixed at the zero-shot confidences through training, the probe starting at the text prototypes,
Dassl's batches and schedule, and a base-to-novel run through main.py whose new classes are zero-shot's and which
reloads to the same accuracies (tests/test_baselines_run.py runs it few-shot with the other baselines)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from baseline_inputs import CLIP_LOGITS, GivenBank, base2new_then_eval_only, given_inputs

from qlora_clip.methods.baselines import clap
from qlora_clip.methods.baselines.schedules import dassl_lr
from qlora_clip.methods.published import CLAP
from qlora_clip.run import schema

ZERO_SHOT = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0], [0.0, math.log(4.0)]], dtype=torch.float64)


def test_the_multipliers_are_the_zero_shot_confidence_in_each_class_by_hand():
    # class 0: softmax (3/4, 1/4) and (1/2, 1/2) -> (3/4 + 1/2) / 2 = 5/8; class 1: (1/5, 4/5) -> 4/5
    assert clap.multipliers(ZERO_SHOT, torch.tensor([0, 0, 1]), 2).tolist() == pytest.approx([0.625, 0.8], abs=1e-12)


def test_the_penalty_by_hand():
    # distances |(1,2)-(1,0)|^2 = 4, |(0,0)-(0,1)|^2 = 1 -> mean(5/8 x 4, 4/5 x 1) = (2.5 + 0.8) / 2
    w = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    weights = torch.tensor([0.625, 0.8], dtype=torch.float64)
    assert clap.penalty(w, t, weights).item() == pytest.approx(1.65, abs=1e-12)
    assert clap.penalty(t, t, weights).item() == 0.0


@pytest.mark.parametrize("images, expected", [(100, 1), (255, 1), (256, 1), (600, 2), (16_000, 62)])
def test_an_epoch_has_as_many_batches_as_daasls_loader_over_the_original_images(images, expected):
    assert clap.batches_per_epoch(images, 256) == expected


class Prompts:
    """The run's class prompts as the fit reads them: their text, tokens (unused here) and features."""

    def __init__(self, prompts, features):
        self.prompts, self.input_ids, self.attention_mask = prompts, None, None
        self.features = lambda model: F.normalize(features, dim=-1)


@pytest.fixture(scope="module")
def fitted():
    """CLAP fitted on 4 images x 20 hand-made views of 2 classes, with raw text prototypes of norm 5; and the
    learning rate of every optimizer step."""
    g = torch.Generator().manual_seed(0)
    train = torch.randn(4, 8, generator=g)
    views = torch.stack([train + 0.3 * torch.randn(4, 8, generator=g) for _ in range(20)])
    raw = 5 * F.normalize(torch.randn(2, 8, generator=g), dim=-1)
    bank = GivenBank(train, torch.tensor([0, 0, 1, 1]), train, torch.tensor([0, 0, 1, 1]), {"clap": views})
    inputs = given_inputs(bank, F.normalize(raw, dim=-1))
    inputs.prompts = Prompts(["a photo of a class0.", "a photo of a class1."], raw)
    steps = []
    step = torch.optim.SGD.step

    def recorded(self, *args, **kwargs):
        steps.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(clap, "raw_text", lambda model, prompts: raw)
        patch.setattr(torch.optim.SGD, "step", recorded)
        return clap.fit(inputs), views, raw, steps


def test_the_multipliers_come_from_the_augmented_support_and_stay_fixed(fitted):
    fit, views, raw, _ = fitted
    support = views.reshape(-1, 8)
    labels = torch.tensor([0, 0, 1, 1]).repeat(20)
    expected = clap.multipliers(CLIP_LOGITS(F.normalize(support, dim=-1), F.normalize(raw, dim=-1)), labels, 2)
    torch.testing.assert_close(fit.saved["multipliers"], expected)
    torch.testing.assert_close(fit.saved["zero_shot"], raw)  # the constraint's anchor is the raw text prototypes


def test_the_first_loss_is_the_zero_shot_cross_entropy_and_the_probe_moves(fitted):
    fit, views, raw, _ = fitted
    # the first epoch's only batch: all 80 views (fewer than 256), in its shuffled order; the penalty is 0 at t
    first = CLIP_LOGITS(F.normalize(views.reshape(-1, 8), dim=-1), F.normalize(raw, dim=-1))
    assert fit.losses[0] == pytest.approx(F.cross_entropy(first, torch.tensor([0, 0, 1, 1]).repeat(20)).item(),
                                          rel=1e-5)
    assert not torch.allclose(fit.saved["prototypes"], raw)
    assert fit.steps == CLAP["epochs"] == len(fit.losses)
    assert fit.images_seen == CLAP["epochs"] * 80
    assert fit.trainable_params == 2 * 8


def test_the_learning_rate_is_daasls_warm_up_then_cosine_per_epoch(fitted):
    *_, lrs = fitted
    assert lrs[0] == CLAP["warmup_lr"]
    assert lrs == [dassl_lr(e, 0.1, 300, 1, 1e-5) for e in range(300)]
    assert lrs[1] == pytest.approx(0.1)


def test_unseen_classes_are_scored_by_their_own_text_features(fitted):
    fit, _, raw, _ = fitted
    other = torch.randn(1, 8, generator=torch.Generator().manual_seed(1))
    rows = fit.text(Prompts(["a photo of a new one.", "a photo of a class1."], torch.cat([other, raw[[1]]])))
    torch.testing.assert_close(rows[0], F.normalize(other[0], dim=-1))
    torch.testing.assert_close(rows[1], F.normalize(fit.saved["prototypes"][1], dim=-1))


@pytest.fixture(scope="module")
def base2new(color_folder, tmp_path_factory):
    return base2new_then_eval_only("clap", color_folder, tmp_path_factory.mktemp("clap"))


def test_base_to_novel_scores_new_classes_as_zero_shot_and_reloads_to_the_same_accuracies(base2new):
    record, evaluated = base2new
    schema.check(record)
    assert record["new_acc"] == record["zero_shot_new_acc"]
    assert record["trainable_params"] == 2 * 64  # 2 base classes x the tiny width
    assert record["total_steps"] == CLAP["epochs"]
    assert "val" not in record["baseline_features"]  # validation-free
    for name in ("test_acc", "base_acc", "new_acc", "zero_shot_base_acc"):
        assert evaluated[name] == record[name], name
    assert evaluated["trainable_params"] == 0
