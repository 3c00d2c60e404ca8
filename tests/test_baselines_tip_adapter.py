"""Tip-Adapter's cache model against the paper's formula on a case computed by hand, its search, and
Tip-Adapter-F's training of the keys."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from baseline_inputs import CLIP_LOGITS, GivenBank, given_inputs

from qlora_clip.methods.baselines import hparams, tip_adapter


def test_cache_model_logits_equal_the_papers_formula_on_a_hand_computed_case():
    # Two train images with two views each; keys = the views' mean, normalised.
    views = torch.tensor([[[2.0, 0.0], [0.0, 3.0]],
                          [[0.0, 2.0], [0.0, 1.0]]])
    keys, values = tip_adapter.cache_model(views, torch.tensor([0, 1]), n_classes=2)
    r = 1 / math.sqrt(2)
    assert torch.allclose(keys, torch.tensor([[r, r], [0.0, 1.0]]))
    assert torch.equal(values, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    text = torch.eye(2)
    f = torch.tensor([[0.6, 0.8]])
    alpha, beta = 0.5, 2.0
    # 100 f T^T + alpha exp(-beta (1 - f K^T)) L, by hand
    a0, a1 = 0.6 * r + 0.8 * r, 0.8
    expected = [100 * 0.6 + alpha * math.exp(-beta * (1 - a0)), 100 * 0.8 + alpha * math.exp(-beta * (1 - a1))]
    logits = tip_adapter.tip_logits(f, keys, values, text, alpha, beta, CLIP_LOGITS)
    assert torch.allclose(logits, torch.tensor([expected]), atol=1e-5)
    # The cache model with several images of a class adds their votes.
    values3 = F.one_hot(torch.tensor([0, 0]), 2).float()
    vote = tip_adapter.cache_logits(f @ keys.T, values3, beta)
    assert math.isclose(vote[0, 0].item(), math.exp(-beta * (1 - a0)) + math.exp(-beta * (1 - a1)), rel_tol=1e-6)


def test_the_search_grids_are_the_official_ones():
    betas = tip_adapter.search_grid(7, 200)
    assert len(betas) == 200
    assert betas[0] == 0.1
    assert math.isclose(betas[-1], 199 * 6.9 / 200 + 0.1)
    assert tip_adapter.search_grid(3, 20)[1] == 1 * 2.9 / 20 + 0.1


def test_the_search_returns_the_first_best_grid_point_in_the_official_order():
    torch.manual_seed(0)
    keys = F.normalize(torch.randn(6, 4), dim=-1)
    values = F.one_hot(torch.tensor([0, 0, 1, 1, 2, 2]), 3).float()
    text = F.normalize(torch.randn(3, 4), dim=-1)
    val = F.normalize(torch.randn(9, 4), dim=-1)
    labels = torch.tensor([0, 1, 2] * 3)
    config = {"search_scale": [5, 2], "search_steps": [12, 6]}
    beta, alpha, acc = tip_adapter.search(val, labels, keys, values, text, config, CLIP_LOGITS)
    best = None
    for b in tip_adapter.search_grid(5, 12):           # beta outer, alpha inner, strict improvement
        for a in tip_adapter.search_grid(2, 6):
            logits = tip_adapter.tip_logits(val, keys, values, text, a, b, CLIP_LOGITS)
            score = (logits.argmax(1) == labels).float().mean() * 100
            if best is None or score > best[2]:
                best = (b, a, float(score))
    assert (beta, alpha) == best[:2]
    assert math.isclose(acc, best[2], rel_tol=1e-6)


def test_tip_adapter_f_trains_the_keys_and_keeps_the_val_best_epoch():
    torch.manual_seed(0)
    classes, per_class, dim = 3, 4, 8
    labels = torch.arange(classes).repeat_interleave(per_class)
    centres = torch.randn(classes, dim) * 3
    views = centres[labels] + torch.randn(30, len(labels), dim)
    text = F.normalize(torch.randn(classes, dim), dim=-1)
    val_labels = torch.arange(classes).repeat(2)
    bank = GivenBank(views[0], labels, centres[val_labels] + torch.randn(6, dim), val_labels,
                     views={"tip-cache": views[:10], "tip-finetune": views[10:30]})
    fitted = tip_adapter.fit_finetuned(given_inputs(bank, text, dataset="dtd"))
    config = hparams.tip_adapter_config("dtd")
    assert fitted.trainable_params == len(labels) * dim
    assert fitted.steps == config["epochs"] * 1  # 12 images: 1 batch of 256
    assert len(fitted.losses) == fitted.steps
    assert fitted.losses[-1] < fitted.losses[0]
    assert 0 <= fitted.params["best_epoch"] < config["epochs"]
    assert fitted.params["search_scale"] == [13, 13]
    assert fitted.params["config_of"] == "dtd"
    training_free = tip_adapter.fit_training_free(given_inputs(bank, text, dataset="dtd"))
    assert training_free.trainable_params == 0
    assert training_free.added_params == len(labels) * (dim + classes)


def test_datasets_without_a_tip_adapter_config_use_imagenets_and_say_so():
    assert hparams.tip_adapter_config("fashion_mnist")["config_of"] == "imagenet"
    assert hparams.tip_adapter_config("eurosat")["epochs"] == 100
