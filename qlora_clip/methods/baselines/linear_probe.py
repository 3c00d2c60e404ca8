"""The linear probe of CoOp's table (lpclip/linear_probe.py, after CLIP's appendix A.3): multinomial
logistic regression on the frozen, unnormalised image embeddings of the centre-cropped train images,
its L2 strength chosen on the few-shot val images.

The fit is scikit-learn's LogisticRegression(solver='lbfgs', penalty='l2', max_iter=1000), written
in torch: full-batch L-BFGS in float64 from zero weights, minimising
    mean cross-entropy + ||W||^2 / (2 C n)        (the intercept is not penalised),
which is scikit-learn's C * sum of cross-entropies + ||W||^2 / 2 divided by C n (same minimiser,
and scikit-learn's own scaling). On two classes scikit-learn fits one binary model, which the softmax
matches at C / 2 (softmax_c). The search is CoOp's: C over 1e6, 1e4, ..., 1e-6, the best on val
(the first of equals); then 8 rounds that fit the two ends of [C/10, 10 C] and keep the half, in
log10 C, on the side of the better one (the left on a tie); C is the last round's winner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from qlora_clip.methods.baselines import hparams
from qlora_clip.methods.baselines.base import Baseline, BaselineInputs, FeatureBaseline, Fitted, Needs, accuracy

# L-BFGS's stopping rules: scikit-learn's tol (on the gradient) and scipy's ftol, history of 10.
GRAD_TOLERANCE = 1e-4
CHANGE_TOLERANCE = 64 * torch.finfo(torch.float64).eps
HISTORY = 10


@dataclass
class Logistic:
    """Weights (classes, dim) and intercepts (classes,) of a fitted probe, float64."""
    weight: torch.Tensor
    bias: torch.Tensor
    iterations: int = 0  # L-BFGS iterations the fit took

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(self.weight) @ self.weight.T + self.bias


def objective(model: Logistic, features: torch.Tensor, labels: torch.Tensor, c: float) -> torch.Tensor:
    """mean cross-entropy + ||W||^2 / (2 C n): scikit-learn's L2 logistic loss, divided by C n."""
    return F.cross_entropy(model.logits(features), labels) + model.weight.square().sum() / (2 * c * len(labels))


def softmax_c(c: float, n_classes: int) -> float:
    """The C at which our softmax objective has scikit-learn's solution for its C.

    On two classes scikit-learn fits ONE binary model, P(class 1) = sigmoid(w.x + b), with the
    penalty ||w||^2 / 2 (CoOp's lpclip/linear_probe.py calls LogisticRegression with the default
    multi_class, which is binary for two labels). A 2-way softmax with rows w1, w2 gives
    P(class 1) = sigmoid((w2 - w1).x + b2 - b1): the same model with w = w2 - w1, and the same
    cross-entropy. Its penalty is (||w1||^2 + ||w2||^2) / 2, and among the pairs with one difference w
    (w1 = m - w/2, w2 = m + w/2: the penalty is ||w||^2 / 4 + ||m||^2) it is smallest at m = 0,
    where it is ||w||^2 / 4, half the binary one; the optimum has m = 0, since m changes no logit.
    So softmax at C minimises C * sum CE + ||w||^2 / 4, i.e. (times 2) the binary objective at 2 C:
    the softmax at C / 2 is scikit-learn's fit at C (the same w, predictions and probabilities).
    On three or more classes scikit-learn's lbfgs fits the softmax itself: C unchanged.
    """
    return c / 2 if n_classes == 2 else c


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, n_classes: int, c: float,
                 max_iter: int = hparams.LINEAR_PROBE["max_iter"]) -> Logistic:
    """scikit-learn's L2-regularised logistic regression at C (on two classes its binary model, as a
    softmax: softmax_c), by full-batch L-BFGS."""
    x = features.to(torch.float64)
    c = softmax_c(c, n_classes)
    model = Logistic(torch.zeros(n_classes, x.shape[1], dtype=torch.float64, device=x.device, requires_grad=True),
                     torch.zeros(n_classes, dtype=torch.float64, device=x.device, requires_grad=True))
    optimizer = torch.optim.LBFGS([model.weight, model.bias], max_iter=max_iter, tolerance_grad=GRAD_TOLERANCE,
                                  tolerance_change=CHANGE_TOLERANCE, history_size=HISTORY,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective(model, x, labels, c)
        loss.backward()
        return loss

    optimizer.step(closure)
    iterations = int(optimizer.state[model.weight].get("n_iter", 0))  # LBFGS keeps its state on the first parameter
    return Logistic(model.weight.detach(), model.bias.detach(), iterations)


@dataclass
class Search:
    """The chosen C and every (C, val accuracy) the search evaluated, in order."""
    c: float
    trace: list[tuple[float, float]]


def search_c(val_accuracy: Callable[[float], float], grid: list[float], rounds: int) -> Search:
    """CoOp's coarse-then-bisect search of C (module docstring); `val_accuracy(C)` fits and scores one C."""
    trace: list[tuple[float, float]] = []

    def score(c: float) -> float:
        acc = val_accuracy(c)
        trace.append((c, acc))
        return acc

    coarse = [score(c) for c in grid]
    peak = grid[coarse.index(max(coarse))]
    left, right, chosen = peak / 10, peak * 10, peak
    for _ in range(rounds):
        acc_left, acc_right = score(left), score(right)
        middle = 10 ** ((math.log10(left) + math.log10(right)) / 2)
        if acc_left < acc_right:
            chosen, left = right, middle
        else:
            chosen, right = left, middle
    return Search(chosen, trace)


def _needs(dataset: str, shots: int) -> Needs:
    return Needs(val=True, train_centre=True)


def fit(inputs: BaselineInputs) -> Fitted:
    train, val = inputs.bank.train_centre(), inputs.bank.val()
    x, y = inputs.on_device(train.features), train.labels.to(inputs.device)
    val_x, val_y = inputs.on_device(val.features), val.labels.to(inputs.device)
    n_classes = len(inputs.classnames)
    fits: dict[float, Logistic] = {}

    def val_accuracy(c: float) -> float:
        if c not in fits:
            fits[c] = fit_logistic(x, y, n_classes, c)
        return accuracy(fits[c].logits(val_x), val_y)

    config = hparams.LINEAR_PROBE
    search = search_c(val_accuracy, list(config["coarse_grid"]), config["refine_steps"])
    probe = fits[search.c]
    weights = probe.weight.numel() + probe.bias.numel()
    return Fitted(predict=lambda features, text: probe.logits(features).float(),
                  params={**config, "C": search.c, "fits": len(fits),
                          "search": [[c, acc] for c, acc in search.trace]},
                  trainable_params=weights, added_params=weights,
                  steps=sum(model.iterations for model in fits.values()),
                  images_seen=sum(model.iterations for model in fits.values()) * len(y))


LINEAR_PROBE = Baseline(needs=_needs, fit=fit)


class LinearProbe(FeatureBaseline):
    baseline = LINEAR_PROBE
