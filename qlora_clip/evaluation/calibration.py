"""Calibration of a classifier from one pass over its test set: ECE, NLL, Brier score, reliability bins.

`CalibrationAccumulator.update(logits, labels)` is called with each test batch where the accuracy is
counted. It keeps a handful of sums on the logits' device and never reads a value back, so the GPU
does not wait on it; `result()` reads them once at the end. The sums are one float64 vector
(`sums`), so a sharded evaluation all-reduces it (SUM) across processes and every process then gets
the whole test set's figures from `result()` (or `calibration_from_sums`).

Definitions (docs/evaluation.md has them with their sources):
- confidence: the top label's softmax probability, max_c softmax(logits)_c; the prediction is the
  argmax of the logits, as `metrics.count_correct` counts it, so `correct` here is the accuracy's.
- ECE (Guo et al., ICML 2017, "On Calibration of Modern Neural Networks", section 2): the confidences in
  15 equal-width bins over [0, 1]; sum over bins of |B| / n * |acc(B) - conf(B)|.
- NLL: mean over images of -log softmax(logits)_label, from log_softmax in float32 (no log of an
  underflowed probability).
- Brier score: mean over images of sum_c (p_c - onehot(label)_c)^2, Brier's own multiclass score
  (Brier 1950, "Verification of forecasts expressed in terms of probability", Monthly Weather
  Review 78(1): the squared differences summed over the classes, averaged over the forecasts), so
  it lies in [0, 2]. Some papers divide by the number of classes as well; we do not.

All figures are fractions (accuracy 0.5, not 50 %): the results line decides how to print them.
Sums are float64, exact for counts up to 2**53 images (devices without float64, such as Apple's
MPS, are not supported).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

ECE_BINS = 15  # the CLIP calibration literature's, after Guo et al. (2017)

# The layout of `sums`: these totals, then per bin its image count, its correct predictions, and the
# sum of its confidences (each a block of `bins` values).
TOTALS = ("images", "correct", "confidence", "nll", "brier")
PER_BIN = ("images", "correct", "confidence")


def sums_length(bins: int) -> int:
    return len(TOTALS) + len(PER_BIN) * bins


def bin_index(confidence: torch.Tensor, bins: int = ECE_BINS) -> torch.Tensor:
    """The bin of each confidence: bin k holds (k / bins, (k + 1) / bins]; bin 0 also holds 0.

    Bins are closed on the right, as in the code of Guo et al.'s authors (gpleiss/temperature_scaling,
    temperature_scaling.py, class _ECELoss: `confidences.gt(bin_lower) * confidences.le(bin_upper)`,
    line 122), which the CLIP calibration papers reuse: a confidence of exactly k/15 is in bin k-1, below
    the edge, and a confidence of 1 is in the last bin. netcal (EFS-OpenSource/calibration-framework,
    netcal/metrics/Miscalibration.py, line 236) bins with numpy's histogram, closed on the left, and
    puts it in bin k instead; the two differ only for confidences exactly on an edge. The edges are the
    floats nearest to k/15 (k / bins in float32); _ECELoss's torch.linspace(0, 1, 16) (line 110) is
    one unit in the last place off for some k (e.g. 10/15), so a confidence of exactly the float 2/3 is
    in bin 9 here and in bin 10 there.
    """
    inner_edges = torch.arange(1, bins, device=confidence.device, dtype=torch.float32) / bins
    # bucketize(right=False) returns i with edges[i-1] < x <= edges[i]: the bin closed on the right.
    return torch.bucketize(confidence.float(), inner_edges, right=False)


def batch_sums(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> torch.Tensor:
    """One batch's sums, laid out as `CalibrationAccumulator.sums`, on the logits' device."""
    check_batch(logits, labels)
    logits32 = logits.float()
    log_probs = torch.log_softmax(logits32, dim=-1)
    # softmax itself, not exp(log_probs): exp(0) is 1 and its division is correctly rounded, so k equal
    # logits give exactly the float 1/k on any device, and a confidence on a bin edge is reproducible.
    probs = torch.softmax(logits32, dim=-1)
    confidence = probs.max(dim=-1).values
    correct = (logits.argmax(dim=-1) == labels).float()
    label_index = labels.long().unsqueeze(1)
    nll = -log_probs.gather(1, label_index).squeeze(1)
    # (p - onehot) directly rather than sum p^2 - 2 p_label + 1, which cancels to noise when p is
    # close to the one-hot vector.
    off = probs.scatter_add(1, label_index, -torch.ones_like(confidence).unsqueeze(1))
    brier = off.square().sum(dim=-1)
    # Columns in the order of TOTALS, whose first three are PER_BIN.
    per_image = torch.stack([torch.ones_like(confidence), correct, confidence, nll, brier], dim=1).double()
    # A one-hot product rather than index_add_, whose atomics make float sums order-dependent on GPUs; built
    # by comparison rather than F.one_hot, which checks the indices' range on the host for some devices.
    in_bin = (bin_index(confidence, bins).unsqueeze(1) == torch.arange(bins, device=logits.device)).double()
    per_bin = in_bin.T @ per_image[:, :len(PER_BIN)]  # (bins, 3)
    return torch.cat([per_image.sum(dim=0), per_bin.T.reshape(-1)])


def check_batch(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Shapes and dtypes only: metadata, so checking never waits on the device."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (images, classes); got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point; got {logits.dtype}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be (images,) = ({logits.shape[0]},) to match the logits; "
                         f"got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integer class indices; got {labels.dtype}")
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"an empty batch (logits of shape {tuple(logits.shape)}) has nothing to calibrate")


@dataclass(frozen=True)
class Calibration:
    """A test set's calibration; rates are fractions in [0, 1].

    The bins are equal-width over [0, 1], bin k covering (k / bins, (k + 1) / bins]; an empty bin's
    accuracy and confidence are None.
    """
    images: int
    correct: int
    accuracy: float            # correct / images
    confidence: float          # mean confidence; above the accuracy: over-confident on average
    ece: float                 # expected calibration error, top label, equal-width bins
    nll: float                 # mean negative log-likelihood of the label, in nats
    brier: float               # mean over images of the sum over classes, in [0, 2]
    bin_counts: tuple[int, ...]
    bin_accuracy: tuple[float | None, ...]
    bin_confidence: tuple[float | None, ...]

    @property
    def bins(self) -> int:
        return len(self.bin_counts)


def calibration_from_sums(sums: torch.Tensor) -> Calibration:
    """The figures from sums laid out as `CalibrationAccumulator.sums` (one process's, or all
    processes' summed); the number of bins follows from the length. Reads the sums once."""
    if sums.dim() != 1 or sums.numel() <= len(TOTALS) or (sums.numel() - len(TOTALS)) % len(PER_BIN):
        raise ValueError(f"calibration sums must be a vector of {len(TOTALS)} + {len(PER_BIN)} x bins values; "
                         f"got shape {tuple(sums.shape)}")
    values = sums.detach().double().cpu().tolist()
    images, correct, confidence, nll, brier = values[:len(TOTALS)]
    bins = (len(values) - len(TOTALS)) // len(PER_BIN)
    counts, hits, confidences = (values[len(TOTALS) + i * bins:len(TOTALS) + (i + 1) * bins]
                                 for i in range(len(PER_BIN)))
    n = round(images)
    if n == 0:
        raise ValueError("no images were accumulated: calibration of an empty test set is undefined")
    # |B| / n * |acc(B) - conf(B)| = |correct(B) - confidence sum(B)| / n: no division by an empty bin.
    ece = sum(abs(h - c) for h, c in zip(hits, confidences)) / images
    return Calibration(
        images=n, correct=round(correct), accuracy=correct / images, confidence=confidence / images, ece=ece,
        nll=nll / images,
        brier=brier / images, bin_counts=tuple(round(c) for c in counts),
        bin_accuracy=tuple(h / c if c else None for h, c in zip(hits, counts)),
        bin_confidence=tuple(s / c if c else None for s, c in zip(confidences, counts)))


class CalibrationAccumulator:
    """Calibration sums over the batches of one pass, kept on the device until `result()`.

    Give `device` when this process may see no batch at all (a sharded evaluation with more
    processes than batches): its zero sums must be on the device the all-reduce runs on. Otherwise
    the sums live where the first batch's logits are.
    """

    def __init__(self, bins: int = ECE_BINS, device: torch.device | str | None = None) -> None:
        if bins < 1:
            raise ValueError(f"bins must be at least 1; got {bins}")
        self.bins = bins
        self._sums = None if device is None else torch.zeros(sums_length(bins), dtype=torch.float64,
                                                             device=device)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: logits (images, classes) in any floating dtype, labels (images,) class indices."""
        batch = batch_sums(logits, labels.to(logits.device), self.bins)
        if self._sums is None:
            self._sums = batch
        elif batch.device != self._sums.device:
            raise ValueError(f"logits on {batch.device}, but this accumulator's sums are on {self._sums.device}; "
                             "give every batch on one device (the `device` it was created with)")
        else:
            self._sums += batch

    @property
    def sums(self) -> torch.Tensor:
        """The raw sums (float64 vector, TOTALS then PER_BIN blocks). All-reducing it in place with SUM
        makes `result()` the figures over every process's images."""
        if self._sums is None:
            self._sums = torch.zeros(sums_length(self.bins), dtype=torch.float64)
        return self._sums

    def result(self) -> Calibration:
        return calibration_from_sums(self.sums)


def calibration(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> Calibration:
    """The figures of one tensor of logits at once (e.g. a saved predictions file's)."""
    accumulator = CalibrationAccumulator(bins)
    accumulator.update(logits, labels)
    return accumulator.result()
