"""ProKeR (qlora_clip/methods/baselines/proker.py): the closed form on a small hand-computed case, its limits, the
grid search on the val images (the eigendecomposed search picks what the official solve per grid point picks),
and a base-to-novel run through main.py whose new classes are zero-shot's and which reloads to the same
accuracies (tests/test_baselines_run.py runs it few-shot with the other baselines)."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from baseline_inputs import GivenBank, base2new_then_eval_only, given_inputs

from qlora_clip.methods.baselines import proker
from qlora_clip.methods.baselines.base import accuracy
from qlora_clip.run import schema

F64 = torch.float64


def test_the_closed_form_by_hand():
    # support e1 (class 0), e2 (class 1); W = I/2 -> zero-shot on the support I/2, residual I/2.
    # beta = ln 2 -> k(e1, e2) = 1/2, K = [[1, 1/2], [1/2, 1]]; lambda = 1: (K + I)^-1 = 4/15 [[2, -1/2], [-1/2, 2]]
    # -> alpha = 2/15 [[2, -1/2], [-1/2, 2]]; query e1: (1/2, 0) + (1, 1/2) alpha = (11/15, 1/15)
    x, y, w = torch.eye(2, dtype=F64), torch.eye(2, dtype=F64), 0.5 * torch.eye(2, dtype=F64)
    alpha = proker.fit_alpha(x, y, w, beta=math.log(2), lam=1.0)
    expected = [[Fraction(4, 15), Fraction(-1, 15)], [Fraction(-1, 15), Fraction(4, 15)]]
    assert alpha.tolist() == [pytest.approx([float(v) for v in row], abs=1e-12) for row in expected]
    assert proker.logits(x[:1], x, alpha, w, math.log(2)).tolist()[0] == pytest.approx([11 / 15, 1 / 15], abs=1e-12)
    # lambda = 2 tells K / lambda + I from K + lambda I: alpha = [[12/35, -2/35], [-2/35, 12/35]], f(e1) = (57/70, 4/35)
    alpha2 = proker.fit_alpha(x, y, w, beta=math.log(2), lam=2.0)
    assert alpha2.tolist() == [pytest.approx([12 / 35, -2 / 35], abs=1e-12), pytest.approx([-2 / 35, 12 / 35], abs=1e-12)]
    assert proker.logits(x[:1], x, alpha2, w, math.log(2)).tolist()[0] == pytest.approx([57 / 70, 4 / 35], abs=1e-12)


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64), dim=-1)


def test_it_is_lambda_times_kernel_ridge_regression_of_the_zero_shot_residual():
    s, w, q = unit(6, 4, seed=3), unit(3, 4, seed=4), unit(2, 4, seed=5)
    y = F.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).to(F64)
    beta, lam = 1.7, 0.1
    k = torch.exp(-beta * (1 - s @ s.T))
    ridge = lam * torch.inverse(k + lam * torch.eye(6, dtype=F64)) @ (y - s @ w.T)
    expected = q @ w.T + torch.exp(-beta * (1 - q @ s.T)) @ ridge
    torch.testing.assert_close(proker.logits(q, s, proker.fit_alpha(s, y, w, beta, lam), w, beta), expected)


def test_lambda_to_zero_is_zero_shot_and_to_infinity_the_residual_cache():
    s, w, q = unit(5, 3, seed=6), unit(2, 3, seed=7), unit(4, 3, seed=8)
    y = F.one_hot(torch.tensor([0, 1, 0, 1, 1]), 2).to(F64)
    zero_shot = q @ w.T
    torch.testing.assert_close(proker.logits(q, s, proker.fit_alpha(s, y, w, 2.0, 1e-9), w, 2.0), zero_shot,
                               rtol=0, atol=1e-7)
    cache = torch.exp(-2.0 * (1 - q @ s.T)) @ (y - s @ w.T)
    torch.testing.assert_close(proker.logits(q, s, proker.fit_alpha(s, y, w, 2.0, 1e9), w, 2.0), zero_shot + cache,
                               rtol=0, atol=1e-6)


def test_the_kernel_is_gaussian_on_the_sphere():
    a, b = unit(3, 5, seed=9), unit(4, 5, seed=10)
    torch.testing.assert_close(proker.kernel(a, b, 1.3), torch.exp(-(1.3 / 2) * torch.cdist(a, b) ** 2))


def test_the_grids_are_the_published_linspaces_and_unknown_datasets_take_the_common_one():
    betas, lams, of = proker.grid("oxford_pets")
    assert (of, len(betas), len(lams)) == ("oxford_pets", 40, 20)
    assert betas[0] == pytest.approx(0.01)
    assert betas[-1] == pytest.approx(5.0)
    assert lams[1] == pytest.approx(0.01 + 0.29 / 19)
    assert proker.grid("folder")[2] == "caltech101"


def test_the_search_picks_the_pair_the_official_solve_per_grid_point_picks():
    support, text, val = unit(12, 4, seed=11), unit(3, 4, seed=12), unit(9, 4, seed=13)
    labels, val_labels = torch.arange(12) % 3, torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2])
    onehot = F.one_hot(labels, 3).to(F64)
    betas, lams = [0.5, 2.0, 6.0], [0.001, 0.05, 0.5, 5.0]
    best = (None, None, -1.0)
    for beta in betas:  # the official loop: a solve per point, strict >, beta outer
        for lam in lams:
            alpha = proker.fit_alpha(support, onehot, text, beta, lam)
            acc = accuracy(proker.logits(val, support, alpha, text, beta), val_labels)
            if acc > best[2]:
                best = (beta, lam, acc)
    assert proker.search(support, onehot, text, val, val_labels, betas, lams) == best


def test_the_fit_uses_every_view_as_a_support_point_and_unseen_classes_get_no_kernel_term(monkeypatch):
    train = torch.randn(4, 8, generator=torch.Generator().manual_seed(14))
    views = torch.stack([train + 0.01 * v for v in range(10)])  # (10 views, 4 images, dim)
    text = unit(2, 8, seed=15).float()
    bank = GivenBank(train, torch.tensor([0, 0, 1, 1]), train[[0, 2]], torch.tensor([0, 1]), {"tip-cache": views})
    inputs = given_inputs(bank, text)

    class Prompts:  # the run's class prompts as the fit reads them: their text and features
        def __init__(self, prompts, features):
            self.prompts, self.features = prompts, lambda model: features

    inputs.prompts = Prompts(["a photo of a class0.", "a photo of a class1."], text)
    monkeypatch.setattr(proker, "class_text", lambda model, prompts: prompts.features(model))
    fitted = proker.fit(inputs)
    assert fitted.params["support"] == 40
    assert fitted.params["grid_of"] == "caltech101"
    assert fitted.saved["alpha"].shape == (40, 2)
    assert fitted.trainable_params == 0
    queries = train[[1, 3]]
    known = fitted.text(inputs.prompts)
    unseen = fitted.text(Prompts(["a photo of a class1.", "a photo of a new one."], text[[1, 0]]))
    assert known[:, -1].tolist() == [0, 1]
    assert unseen[:, -1].tolist() == [1, -1]
    both, fresh = fitted.predict(queries, known), fitted.predict(queries, unseen)
    torch.testing.assert_close(fresh[:, 0], both[:, 1])  # the fitted class keeps its kernel term
    torch.testing.assert_close(fresh[:, 1], F.normalize(queries, dim=-1) @ text[0])  # the unseen one is zero-shot


@pytest.fixture(scope="module")
def base2new(color_folder, tmp_path_factory):
    return base2new_then_eval_only("proker", color_folder, tmp_path_factory.mktemp("proker"))


def test_base_to_novel_scores_new_classes_as_zero_shot_and_reloads_to_the_same_accuracies(base2new):
    record, evaluated = base2new
    schema.check(record)
    assert record["new_acc"] == record["zero_shot_new_acc"]
    assert record["baseline_params"]["support"] == 10 * 2 * 2  # 10 views of 2 base classes x 2 shots
    assert record["baseline_features"]["train-tip-cache"]["views"] == 10
    assert record["adapter_size_mb"] > 0
    for name in ("test_acc", "base_acc", "new_acc", "zero_shot_base_acc"):
        assert evaluated[name] == record[name], name
    assert evaluated["baseline_params"]["beta"] == record["baseline_params"]["beta"]
