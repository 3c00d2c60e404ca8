"""qlora_clip/evaluation/ood.py: the MCM score, AUROC and FPR at 95 % TPR on hand-computed cases, ties included."""
from __future__ import annotations

import math

import pytest
import torch

from qlora_clip.evaluation.ood import auroc, fpr_at_tpr, mcm_score


def scores(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_mcm_score_is_the_top_softmax_probability():
    # [0, 0]: 1/2 each. [ln 3, 0]: 3/4 and 1/4. [0, ln 2, ln 5]: 1/8, 2/8, 5/8.
    logits = torch.tensor([[0.0, 0.0, -math.inf], [math.log(3), 0.0, -math.inf], [0.0, math.log(2), math.log(5)]])
    torch.testing.assert_close(mcm_score(logits), scores(0.5, 0.75, 0.625))
    assert mcm_score(logits.half()).dtype == torch.float32


def test_mcm_score_refuses_what_is_not_a_batch_of_logits():
    with pytest.raises(ValueError, match=r"\(images, classes\)"):
        mcm_score(torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(images, classes\)"):
        mcm_score(torch.zeros(0, 5))
    with pytest.raises(ValueError, match="floating point"):
        mcm_score(torch.zeros(2, 3, dtype=torch.long))


def test_auroc_extremes_and_all_ties():
    assert auroc(scores(3, 4, 5), scores(0, 1, 2)) == 1.0   # every pair ordered right
    assert auroc(scores(0, 1, 2), scores(3, 4, 5)) == 0.0   # every pair ordered wrong
    assert auroc(scores(7, 7), scores(7, 7, 7)) == 0.5      # every pair tied: one half each


def test_auroc_with_ties_counts_them_half():
    # ID [1, 2, 3] vs OOD [2, 0], the 6 pairs: (1,2) 0, (1,0) 1, (2,2) 1/2, (2,0) 1, (3,2) 1, (3,0) 1 -> 4.5 / 6.
    assert auroc(scores(1, 2, 3), scores(2, 0)) == 0.75
    # ID [1, 1] vs OOD [1, 0, 0, 2]: per ID image 1/2 + 1 + 1 + 0 = 2.5 of 4 -> 5 / 8.
    assert auroc(scores(1, 1), scores(1, 0, 0, 2)) == 0.625


def test_auroc_is_the_pairwise_definition_on_random_tied_scores():
    generator = torch.Generator().manual_seed(0)
    id_scores = torch.randint(0, 20, (300,), generator=generator).float()  # few values: many ties
    ood_scores = torch.randint(0, 15, (200,), generator=generator).float()
    difference = id_scores[:, None] - ood_scores[None, :]
    pairwise = ((difference > 0).sum() + 0.5 * (difference == 0).sum()).item() / (300 * 200)
    assert auroc(id_scores, ood_scores) == pytest.approx(pairwise, abs=1e-12)
    # Any real dtype and mixed dtypes: int scores rank as their float values.
    assert auroc(id_scores.long(), ood_scores.double()) == pytest.approx(pairwise, abs=1e-12)


def test_fpr_at_95_tpr_threshold_is_the_19th_of_20():
    # ID 1..20: keeping 95 % = 19 of 20 means the threshold is the 19th largest, 2.
    # OOD [2, 2, 1, 5]: three score >= 2 (the ties at the threshold count as accepted) -> 3/4.
    assert fpr_at_tpr(torch.arange(1, 21).float(), scores(2, 2, 1, 5)) == 0.75


def test_fpr_at_95_tpr_with_in_distribution_ties_at_the_threshold():
    # ID: nineteen 3s and one 1. The 19th largest is 3: threshold 3, TPR exactly 19/20.
    # OOD [3, 2, 4, 0] -> 3 and 4 accepted: 1/2.
    assert fpr_at_tpr(torch.tensor([3.0] * 19 + [1.0]), scores(3, 2, 4, 0)) == 0.5
    # ID: twenty 3s. The 19th largest is still 3; the tie keeps all 20 (TPR 100 %). OOD [3, 3, 2, 2] -> 1/2.
    assert fpr_at_tpr(torch.full((20,), 3.0), scores(3, 3, 2, 2)) == 0.5


def test_fpr_at_95_tpr_when_no_threshold_keeps_exactly_95_percent():
    # ID 1..10: 95 % of 10 is 9.5, so at least 10 must be kept: the threshold is the lowest ID score, 1.
    # OOD [0.5, 1, 2] -> 1 and 2 accepted: 2/3.
    assert fpr_at_tpr(torch.arange(1, 11).float(), scores(0.5, 1, 2)) == pytest.approx(2 / 3)
    # Perfect separation: no OOD image reaches the threshold; reversed, all do.
    assert fpr_at_tpr(torch.arange(10, 30).float(), torch.arange(0, 10).float()) == 0.0
    assert fpr_at_tpr(torch.arange(0, 20).float(), torch.arange(20, 30).float()) == 1.0


def test_fpr_at_other_tpr():
    # ID 1..20 at 50 %: the 10th largest, 11; OOD [10, 11, 12, 20] -> 3/4.
    assert fpr_at_tpr(torch.arange(1, 21).float(), scores(10, 11, 12, 20), tpr_percent=50) == 0.75
    with pytest.raises(ValueError, match=r"tpr_percent must be in \(0, 100\]"):
        fpr_at_tpr(scores(1), scores(0), tpr_percent=0)


@pytest.mark.parametrize("metric", [auroc, fpr_at_tpr])
@pytest.mark.parametrize("id_scores, ood_scores, message", [
    (torch.zeros(2, 3), scores(1), r"in-distribution scores must be a 1-D tensor.*\(2, 3\)"),
    (scores(1), torch.tensor(1.0), r"OOD scores must be a 1-D tensor.*\(\)"),
    ([1.0, 2.0], scores(1), "in-distribution scores must be a 1-D tensor.*list"),
    (scores(), scores(1), "no in-distribution scores"),
    (scores(1), scores(), "no OOD scores"),
    (scores(1, math.nan), scores(1), "in-distribution scores contain NaN"),
    (scores(1), torch.tensor([True]), "OOD scores must be real numbers"),
])
def test_bad_scores_are_named(metric, id_scores, ood_scores, message):
    with pytest.raises(ValueError, match=message):
        metric(id_scores, ood_scores)
