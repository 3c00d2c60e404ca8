"""The linear probe: its fit is the L2 logistic regression's optimum, its search is CoOp's and picks
the best validation value."""
from __future__ import annotations

import math

import torch
from baseline_inputs import GivenBank, given_inputs

from qlora_clip.methods.baselines import hparams, linear_probe


def small_problem(seed: int = 0, n: int = 24, dim: int = 3, classes: int = 3):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat(n // classes)
    features = torch.randn(classes, dim, generator=generator)[labels] + torch.randn(n, dim, generator=generator)
    return features.double(), labels


def newton_solution(features, labels, classes, c, iterations=15):
    """The same objective minimised by Newton's method on the flattened (W, b): an independent solver."""
    dim = features.shape[1]

    def loss(flat):
        model = linear_probe.Logistic(flat[:classes * dim].view(classes, dim), flat[classes * dim:])
        return linear_probe.objective(model, features, labels, c)

    flat = torch.zeros(classes * dim + classes, dtype=torch.float64)
    for _ in range(iterations):
        grad = torch.func.grad(loss)(flat)
        hessian = torch.func.hessian(loss)(flat)
        flat = flat - torch.linalg.lstsq(hessian, grad).solution  # the intercepts make the Hessian singular
    return linear_probe.Logistic(flat[:classes * dim].view(classes, dim), flat[classes * dim:])


def test_the_fit_is_the_optimum_of_scikit_learns_l2_logistic_objective():
    features, labels = small_problem()
    for c in (0.1, 10.0):
        fitted = linear_probe.fit_logistic(features, labels, 3, c)
        exact = newton_solution(features, labels, 3, c)
        # L-BFGS stops at scikit-learn's tolerance (1e-4 on the gradient): the optimum to that precision.
        gap = linear_probe.objective(fitted, features, labels, c) - linear_probe.objective(exact, features, labels, c)
        assert -1e-10 < gap < 1e-7
        assert torch.allclose(fitted.weight, exact.weight, atol=1e-3)  # W is unique (b up to a shared constant)
        assert fitted.iterations > 0


def binary_newton_solution(features, labels, c, iterations=10):
    """scikit-learn's two-class model, written out on its own: one weight vector w and intercept b for
    P(label 1) = sigmoid(w.x + b), minimising mean log-loss + ||w||^2 / (2 C n), by Newton's method."""
    signs = labels.double() * 2 - 1
    n, dim = features.shape

    def loss(flat):
        margins = signs * (features @ flat[:dim] + flat[dim])
        return torch.nn.functional.softplus(-margins).mean() + flat[:dim].square().sum() / (2 * c * n)

    flat = torch.zeros(dim + 1, dtype=torch.float64)
    for _ in range(iterations):
        flat = flat - torch.linalg.solve(torch.func.hessian(loss)(flat), torch.func.grad(loss)(flat))
    return flat[:dim], flat[dim]


def test_two_classes_fit_scikit_learns_binary_model_at_the_same_c():
    # scikit-learn fits one binary model on two classes (what CoOp's probe runs); the softmax matches
    # it at C / 2 (linear_probe.softmax_c). Checked by hand against scikit-learn 1.9 on such data.
    features, labels = small_problem(seed=3, n=20, dim=4, classes=2)
    for c in (0.1, 10.0):
        fitted = linear_probe.fit_logistic(features, labels, 2, c)
        w, b = binary_newton_solution(features, labels, c)
        assert torch.allclose(fitted.weight[1] - fitted.weight[0], w, atol=2e-3, rtol=1e-3)
        assert torch.allclose(fitted.bias[1] - fitted.bias[0], b, atol=2e-3, rtol=1e-3)
        assert torch.allclose(fitted.weight[0], -fitted.weight[1], atol=1e-3)  # the rows split w evenly
    # The softmax at scikit-learn's own C is the binary model at 2 C: far from it, so the test can fail.
    w, _ = binary_newton_solution(features, labels, 1.0)
    unhalved = linear_probe.fit_logistic(features, labels, 2, 2.0)
    assert (unhalved.weight[1] - unhalved.weight[0] - w).abs().max() > 0.1


def test_stronger_regularisation_shrinks_the_weights():
    features, labels = small_problem()
    norms = [linear_probe.fit_logistic(features, labels, 3, c).weight.norm() for c in (1e-4, 1e-2, 1.0, 1e2)]
    assert norms == sorted(norms)


def test_the_coarse_stage_takes_the_first_of_the_best_grid_values():
    scores = {1e6: 50, 1e4: 60, 1e2: 70, 1.0: 70, 1e-2: 10, 1e-4: 10, 1e-6: 10}
    search = linear_probe.search_c(lambda c: scores.get(c, 0.0), list(scores), rounds=0)
    assert search.c == 1e2
    assert [c for c, _ in search.trace] == list(scores)


def test_the_bisection_converges_on_the_peak_of_a_unimodal_validation_curve():
    peak = 2.3  # log10 C of the best validation accuracy
    search = linear_probe.search_c(lambda c: -abs(math.log10(c) - peak), hparams.LINEAR_PROBE["coarse_grid"],
                                   hparams.LINEAR_PROBE["refine_steps"])
    assert abs(math.log10(search.c) - peak) < 0.1
    best_score = max(score for _, score in search.trace)
    assert -abs(math.log10(search.c) - peak) == best_score  # the chosen C scored best of every C tried
    assert len(search.trace) == 7 + 2 * 8


def test_the_probe_picks_the_c_with_the_best_validation_accuracy():
    # Two well-separated classes: weak regularisation separates val perfectly, the strongest leaves
    # every weight near zero and the intercepts decide (one class for every image).
    labels = torch.tensor([0, 0, 0, 1])
    features = torch.tensor([[2.0, 0.1], [2.2, -0.1], [1.8, 0.0], [-2.0, 0.0]])
    val = torch.tensor([[1.9, 0.0], [-1.9, 0.0], [-2.1, 0.1], [-1.7, 0.0]])
    val_labels = torch.tensor([0, 1, 1, 1])
    text = torch.eye(2)
    fitted = linear_probe.fit(given_inputs(GivenBank(features, labels, val, val_labels), text))
    trace = fitted.params["search"]
    best = max(acc for _, acc in trace)
    chosen = dict((c, acc) for c, acc in trace)[fitted.params["C"]]
    assert chosen == best == 100.0
    assert min(acc for _, acc in trace) < 100.0  # the search saw worse values and did not take them
    assert fitted.predict(val, text).argmax(1).tolist() == val_labels.tolist()
    assert fitted.trainable_params == 2 * 2 + 2
