"""Out-of-distribution detection: how well a score tells the in-distribution test images from others.

The score is MCM's (Ming et al., NeurIPS 2022, "Delving into Out-of-Distribution Detection with
Vision-Language Representations"): the maximum over the classes of the softmax of the image's
cosine similarities to the class prompts divided by a temperature. An image scores high when one
class prompt matches it clearly better than the rest; in-distribution images should score higher.
Two figures compare the in-distribution scores with one OOD set's, in-distribution being the
positive class as in MCM's code:
- AUROC: the probability that a random in-distribution image scores higher than a random OOD one,
  ties counting one half (the Mann-Whitney U statistic over n_id x n_ood pairs);
- FPR at 95 % TPR: the fraction of OOD images that a threshold keeping 95 % of the in-distribution
  images lets through.
Both are fractions. They are computed from sorted scores (O(n log n)), on the scores' device, with one
read-back of the result.
"""
from __future__ import annotations

import torch

TPR_PERCENT = 95


def mcm_score(logits: torch.Tensor) -> torch.Tensor:
    """MCM's score of each image: max over classes of softmax(logits), float32, shape (images,).

    The temperature is the model's own: our logits are the family's (encode.logit_function), CLIP-LoRA's
    fixed 100 x cosine for CLIP, so softmax(logits) is MCM's softmax(cos / tau) at tau = 0.01; for
    SigLIP, scale x cosine + bias, and a bias shared by all classes does not change the softmax. That
    is the score the model classifies with, and the one that changes as it is adapted.

    Where this differs from MCM's code (deeplearning-wisc/MCM): there the temperature is a flag,
    `--T`, default 1 (eval_ood_detection.py, line 31), applied to the raw cosines
    (utils/detection_util.py, line 232: `output = image_features @ text_features.T`; line 236:
    `F.softmax(output / args.T, dim=1)`; line 248: the maximum, negated, and negated back before the
    metrics, line 259). At tau = 1 the softmax of cosines in [-1, 1] is nearly uniform and at 0.01 it
    is sharp; the maximum softmax at one temperature is not a monotone function of the maximum at
    another (it depends on all of an image's similarities), so the two temperatures can rank images
    differently, and our AUROC and FPR compare only with figures computed at the same temperature,
    not with MCM's default. MCM's prompts are "a photo of a {class}" (detection_util.py, line 228);
    ours are the run's.
    """
    if logits.dim() != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits must be a non-empty (images, classes) tensor; got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point; got {logits.dtype}")
    return torch.softmax(logits.float(), dim=-1).max(dim=-1).values


def auroc(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> float:
    """P(in-distribution score > OOD score) + P(equal) / 2, over all pairs.

    For each in-distribution score, binary search in the sorted OOD scores counts the OOD scores below
    it and those at or below it; their sum is twice that image's share of U, so the total is an exact
    integer and all scores equal give exactly 0.5. This is the area under the ROC curve with ties
    joined by straight segments, what sklearn.metrics.roc_auc_score (which MCM's code calls,
    utils/detection_util.py, line 115) computes.
    """
    id_scores, ood_scores = _checked(id_scores, ood_scores)
    ood_sorted = torch.sort(ood_scores).values
    below = torch.searchsorted(ood_sorted, id_scores, right=False)
    at_or_below = torch.searchsorted(ood_sorted, id_scores, right=True)
    twice_u = (below + at_or_below).sum()
    return twice_u.item() / (2 * id_scores.numel() * ood_scores.numel())


def fpr_at_tpr(id_scores: torch.Tensor, ood_scores: torch.Tensor, tpr_percent: int = TPR_PERCENT) -> float:
    """The fraction of OOD scores >= t, where t is the highest threshold that keeps at least
    `tpr_percent` % of the in-distribution images (score >= t counts as in-distribution).

    t is the m-th largest in-distribution score, m = ceil(tpr_percent x n_id / 100), computed in
    integers so that no rounding of 0.95 can move it. Ties: every image scoring exactly t
    is accepted, in-distribution or not, so the TPR reached can exceed 95 % when several
    in-distribution scores equal t, and OOD images scoring t count as false positives. This is the
    first point of the ROC curve whose TPR is at least 95 %, as OpenOOD's `fpr_recall` takes it
    (Jingkang50/OpenOOD, openood/evaluators/metrics.py, lines 29-36: `fpr_list[np.argmax(tpr_list >= tpr)]`,
    in-distribution positive). MCM's code (utils/detection_util.py, lines 66-106, from Hendrycks et
    al.'s outlier-exposure code) groups ties the same way but takes the ROC point whose recall is
    nearest to 95 % (line 104, argmin |recall - 0.95|), which can be one below 95 %; the two agree
    whenever some threshold keeps exactly 95 %, e.g. for 50,000 ImageNet images without a tie at t.
    (OpenOOD's reported FPR@95, `auc_and_fpr_recall`, lines 40-49, makes OOD the positive class: the
    fraction of in-distribution images rejected at 95 % of OOD images caught, another quantity.)
    """
    if not 0 < tpr_percent <= 100:
        raise ValueError(f"tpr_percent must be in (0, 100]; got {tpr_percent}")
    id_scores, ood_scores = _checked(id_scores, ood_scores)
    n_id = id_scores.numel()
    m = (tpr_percent * n_id + 99) // 100
    threshold = torch.sort(id_scores, descending=True).values[m - 1]
    return (ood_scores >= threshold).sum().item() / ood_scores.numel()


def _checked(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as 1-D float64 tensors on one device (float64 compares any score dtype exactly)."""
    for name, scores in (("in-distribution", id_scores), ("OOD", ood_scores)):
        if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(f"{name} scores must be a 1-D tensor, one score per image; got {shape}")
        if scores.numel() == 0:
            raise ValueError(f"no {name} scores: detection figures need images on both sides")
        if scores.is_complex() or scores.dtype == torch.bool:
            raise ValueError(f"{name} scores must be real numbers; got {scores.dtype}")
        if scores.is_floating_point() and torch.isnan(scores).any():
            raise ValueError(f"{name} scores contain NaN, which has no place in a ranking")
    if id_scores.device != ood_scores.device:
        raise ValueError(f"in-distribution scores on {id_scores.device}, OOD scores on {ood_scores.device}; "
                         "put both on one device")
    return id_scores.double(), ood_scores.double()
