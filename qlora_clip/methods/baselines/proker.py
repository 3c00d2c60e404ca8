"""ProKeR (Bendou et al., CVPR 2025): proximal kernel ridge regression on cached features, training-free.

On L2-normalised features, with the class text features W (classes, dim) and the support set X_S: every
few-shot train image encoded in 10 augmented views (RandomResizedCrop(scale=(0.5, 1)) + flip), each view a
support point of its own (S = 10 x images), with one-hot labels Y,

    k(x, y) = exp(-beta (1 - x . y))                    (a Gaussian kernel on the sphere)
    alpha   = (K_SS / lambda + I)^-1 (Y - X_S W^T)       (a linear solve)
    f(x)    = x W^T + k(x, X_S) alpha                    (cosines, no logit scale)

(the author's trainers/proker.py#L8-L56). alpha = lambda (K_SS + lambda I)^-1 R: the correction is lambda times
kernel ridge regression of the zero-shot residual R, so lambda -> 0 is zero-shot CLIP and lambda -> inf a
Tip-Adapter-like cache of the residual. beta and lambda are searched on the few-shot val images over the
published per-dataset grids (torch.linspace, beta outer, lambda inner, the first best kept), K_SS
eigendecomposed once per beta (alpha = Q diag(lambda / (Lambda + lambda)) Q^T R: the official solve per grid
point, |lambda| times cheaper); the chosen pair is solved as the official code does.

Where we differ from the official code (docs/methods.md): it searches the dataset's FULL val split by default,
and on ImageNet its test set (main.py#L113-L116), which also gives its fixed transfer values; we search our
few-shot val draw (min(shots, 4) per class). Its zero-shot classifier averages a dataset's templates (CLIP's
7 on ImageNet); ours is the run's prompts (--template). Its views are Tip-Adapter's, so we read Tip-Adapter's
cached views ("tip-cache"): same crop law and count, encoded once per sweep.

Classes the fit has no row for (base-to-novel's new ones, --eval_datasets) get no kernel term: f is the
zero-shot cosine there, so "new" accuracy is zero-shot CLIP's (the paper has no base-to-novel setting).
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.methods.baselines.base import Baseline, BaselineInputs, Fitted, Needs, accuracy
from qlora_clip.methods.baselines.saved_fit import SavedFeatureFit, row_of
from qlora_clip.methods.baselines.views import ViewSet
from qlora_clip.methods.published import PROKER, PROKER_FALLBACK, PROKER_GRIDS

log = logging.getLogger(__name__)

VIEWS = ViewSet("tip-cache", tuple(PROKER["view_scale"]), PROKER["views"])


def kernel(x: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """k(x, y) = exp(-beta (1 - x . y)) on L2-normalised rows (proker.py#L8-L9)."""
    return torch.exp(-beta * (1.0 - x @ y.T))


def fit_alpha(support: torch.Tensor, onehot: torch.Tensor, text: torch.Tensor, beta: float,
              lam: float) -> torch.Tensor:
    """The closed form's coefficients (S, classes): (K_SS / lambda + I)^-1 (Y - X_S W^T) (proker.py#L49-L50)."""
    residual = onehot - support @ text.T
    eye = torch.eye(len(support), dtype=support.dtype, device=support.device)
    return torch.linalg.solve(kernel(support, support, beta) / lam + eye, residual)


def logits(x: torch.Tensor, support: torch.Tensor, alpha: torch.Tensor, text: torch.Tensor,
           beta: float) -> torch.Tensor:
    """f(x) = x W^T + k(x, X_S) alpha (proker.py#L52-L55), for normalised x."""
    return x @ text.T + kernel(x, support, beta) @ alpha


def grid(dataset: str) -> tuple[list[float], list[float], str]:
    """(betas, lambdas, the dataset whose published grid it is): torch.linspace(start, end, n) of its config."""
    of = dataset if dataset in PROKER_GRIDS else PROKER_FALLBACK
    spec = PROKER_GRIDS[of]
    return ([float(v) for v in torch.linspace(*spec["beta"], dtype=torch.float64)],
            [float(v) for v in torch.linspace(*spec["lambda"], dtype=torch.float64)], of)


def search(support: torch.Tensor, onehot: torch.Tensor, text: torch.Tensor, val: torch.Tensor,
           val_labels: torch.Tensor, betas: list[float], lams: list[float]) -> tuple[float, float, float]:
    """(beta, lambda, val accuracy) of the best grid point, beta outer, lambda inner, the first best kept."""
    residual = onehot - support @ text.T
    val_zero_shot = val @ text.T
    best = (betas[0], lams[0], -math.inf)
    for beta in betas:
        eigenvalues, q = torch.linalg.eigh(kernel(support, support, beta))
        eigenvalues = eigenvalues.clamp(min=0)  # K is positive semi-definite; rounding may dip below 0
        projected, val_kernel = q.T @ residual, kernel(val, support, beta) @ q
        for lam in lams:
            shrink = (lam / (eigenvalues + lam)).unsqueeze(1)
            acc = accuracy(val_zero_shot + val_kernel @ (shrink * projected), val_labels)
            if acc > best[2]:
                best = (beta, lam, acc)
    return best


def _needs(dataset: str, shots: int) -> Needs:
    return Needs(val=True, views=(VIEWS,))


def class_text(model: torch.nn.Module, prompts: ClassPrompts) -> torch.Tensor:
    """The prompts' normalised text features from the frozen base (the zero-shot classifier W), float32, in the
    caller's precision (the evaluator's autocast, as the fit's)."""
    with torch.no_grad():
        features = prompts.features(model)
    return F.normalize(features.float(), dim=-1)


def fit(inputs: BaselineInputs) -> Fitted:
    views = inputs.bank.train_views(VIEWS)
    n_views, n_images, dim = views.features.shape
    support = F.normalize(inputs.on_device(views.features).reshape(-1, dim), dim=-1)  # view-major: view v, image i
    labels = views.labels.to(inputs.device).repeat(n_views)
    onehot = F.one_hot(labels, len(inputs.classnames)).float()
    with inputs.precision.autocast():
        text = class_text(inputs.model, inputs.prompts)
    val = inputs.bank.val()
    betas, lams, grid_of = grid(inputs.dataset)
    log.info("ProKeR: %d support features, a %d x %d kernel (%.1f MB) per grid point", len(support), len(support),
             len(support), len(support) ** 2 * 4 / 2**20)
    beta, lam, val_acc = search(support, onehot, text, F.normalize(inputs.on_device(val.features), dim=-1),
                                val.labels.to(inputs.device), betas, lams)
    alpha = fit_alpha(support, onehot, text, beta, lam)
    params = {**PROKER, "beta": beta, "lambda": lam, "best_val_acc": val_acc, "grid_of": grid_of,
              "grid": {"beta": PROKER_GRIDS[grid_of]["beta"], "lambda": PROKER_GRIDS[grid_of]["lambda"]},
              "support": len(support)}
    return fitted(inputs.model, support, alpha, params, list(inputs.prompts.prompts))


def fitted(model: torch.nn.Module, support: torch.Tensor, alpha: torch.Tensor, params: dict,
           prompts: list[str]) -> Fitted:
    """The fit as the evaluator calls it. Its class text is (W | the fit's row of each class, -1 for none): the
    kernel term of a class without a row is the zero column appended to alpha, so f is its zero-shot cosine."""
    beta = params["beta"]
    padded = torch.cat([alpha, torch.zeros(len(alpha), 1, dtype=alpha.dtype, device=alpha.device)], dim=1)

    def text(class_prompts: ClassPrompts) -> torch.Tensor:
        rows = [-1 if row is None else row for row in row_of(prompts, class_prompts)]
        features = class_text(model, class_prompts)
        return torch.cat([features, torch.tensor(rows, dtype=features.dtype, device=features.device)[:, None]], 1)

    def predict(features: torch.Tensor, class_text_rows: torch.Tensor) -> torch.Tensor:
        weights, rows = class_text_rows[:, :-1], class_text_rows[:, -1].long()
        with torch.autocast(features.device.type, enabled=False):  # the kernel in float32, as it was fitted
            return logits(F.normalize(features, dim=-1), support, padded[:, rows], weights, beta)

    return Fitted(predict=predict, params=params, added_params=support.numel() + alpha.numel(), text=text,
                  saved={"support": support, "alpha": alpha}, prompts=prompts)


PROKER_FIT = Baseline(needs=_needs, fit=fit)


class ProKeR(SavedFeatureFit):
    baseline = PROKER_FIT

    @classmethod
    def restore(cls, adapted: ProKeR, tensors: dict[str, torch.Tensor], params: dict, prompts: list[str]) -> Fitted:
        return fitted(adapted.model, tensors["support"], tensors["alpha"], params, prompts)
