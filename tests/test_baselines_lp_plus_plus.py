"""LP++'s initialisation and step sizes against the official formulas, computed by hand, and its fit."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from baseline_inputs import GivenBank, given_inputs

from qlora_clip.methods.baselines import lp_plus_plus


def test_initial_alpha_and_step_sizes_are_the_official_formulas():
    features = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # class 0: <f, t_0> = 1.0 and 0.8, mean 0.9; class 1: <f_2, t_1> = 0.8; alpha_0 = 250 x mean(0.9, 0.8)
    assert math.isclose(lp_plus_plus.initial_alpha(features, labels, text, 2), 250 * 0.85, rel_tol=1e-6)
    gram_max = float(torch.linalg.eigvalsh(features.T @ features).max())
    assert math.isclose(lp_plus_plus.weight_step_size(features), 4 * 3 / gram_max, rel_tol=1e-6)
    # sum_i <f_i, t_k>^2: class 0: 1 + 0.64 + 0 = 1.64; class 1: 0.36 + (0.48 + 0.48)^2 + 0.64 = 1.9216
    assert math.isclose(lp_plus_plus.alpha_step_size(features, text), 3 / (4 * 1.9216), rel_tol=1e-5)
    # The visual weights start at the per-class sums (compute_centroids), not the means.
    assert torch.allclose(lp_plus_plus.class_sums(features, labels, 2), torch.tensor([[1.8, 0.6], [0.0, 1.0]]))


def test_logits_blend_the_visual_probe_with_the_text_classifier():
    probe = lp_plus_plus.BlendedProbe(torch.tensor([[1.0, 2.0]]), torch.tensor([0.5]), torch.tensor([3.0]),
                                      torch.tensor([[0.0, 1.0]]))
    f = torch.tensor([[0.6, 0.8]])
    assert torch.allclose(probe.logits(f), torch.tensor([[0.6 + 1.6 + 0.5 + 3.0 * 0.8]]))


def test_the_fit_learns_and_keeps_the_best_val_epoch():
    torch.manual_seed(0)
    classes, dim = 3, 6
    labels = torch.arange(classes).repeat(4)
    centres = torch.randn(classes, dim) * 2
    views = (centres[labels] + torch.randn(len(labels), dim))[None]
    val_labels = torch.arange(classes).repeat(2)
    bank = GivenBank(views[0], labels, centres[val_labels] + torch.randn(6, dim), val_labels, {"lp++": views})
    fitted = lp_plus_plus.fit(given_inputs(bank, F.normalize(torch.randn(classes, dim), dim=-1)))
    assert len(fitted.losses) == fitted.steps == 300
    assert fitted.losses[-1] < fitted.losses[0]
    assert 0 <= fitted.params["best_epoch"] < 300
    assert fitted.trainable_params == classes * dim + 2 * classes  # W, b, alpha
