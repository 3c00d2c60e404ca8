"""A reliability diagram: per confidence bin, the accuracy of the images in it, against the diagonal.

As in Guo et al. (ICML 2017, Figure 1): equal-width bins over [0, 1] on the x axis, a bar per
non-empty bin as high as the accuracy of its images, the gap to their mean confidence shaded
(above the bar: over-confident, below its top: under-confident), the diagonal of perfect
calibration, and the expected calibration error in the title. Takes plain numbers, a results line's
or qlora_clip/evaluation/calibration.py's `Calibration` fields (bin_counts, bin_accuracy,
bin_confidence, ece), so drawing needs no torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from summaries.output import replaced_when_written

FIGURE_INCHES = 4.5
DPI = 100  # 450 x 450 pixels
ACCURACY_COLOR = "#1f77b4"
GAP_COLOR = "#d62728"
GAP_ALPHA = 0.35


def draw_reliability_diagram(path: Path, bin_counts: Sequence[int], bin_accuracy: Sequence[float | None],
                             bin_confidence: Sequence[float | None], ece: float, title: str = "") -> None:
    """Write the diagram to `path` (PNG). Bin k covers (k / bins, (k + 1) / bins]; an empty bin has
    count 0 and accuracy and confidence None, and no bar. `ece` is a fraction, shown in percent."""
    check_bins(bin_counts, bin_accuracy, bin_confidence)
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state; PNG by Agg

    width = 1 / len(bin_counts)
    filled = [k for k, count in enumerate(bin_counts) if count]
    lefts = [k * width for k in filled]
    accuracy = [bin_accuracy[k] for k in filled]
    gap = [bin_confidence[k] - bin_accuracy[k] for k in filled]
    fig = Figure(figsize=(FIGURE_INCHES, FIGURE_INCHES), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(lefts, accuracy, width=width, align="edge", color=ACCURACY_COLOR, edgecolor="black", linewidth=0.5,
           label="accuracy")
    ax.bar(lefts, gap, bottom=accuracy, width=width, align="edge", color=GAP_COLOR, alpha=GAP_ALPHA,
           edgecolor=GAP_COLOR, hatch="//", linewidth=0.5, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("confidence (top-label softmax probability)")
    ax.set_ylabel("accuracy")
    images = sum(bin_counts)
    heading = f"ECE {100 * ece:.2f} % ({len(bin_counts)} bins, {images:,} images)"
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize="medium")
    ax.legend(loc="upper left", fontsize="small")
    with replaced_when_written(Path(path), ".tmp.png") as tmp:
        fig.savefig(tmp, dpi=DPI)


def check_bins(bin_counts: Sequence[int], bin_accuracy: Sequence[float | None],
               bin_confidence: Sequence[float | None]) -> None:
    if not bin_counts or not len(bin_counts) == len(bin_accuracy) == len(bin_confidence):
        raise ValueError(f"a reliability diagram needs as many accuracies and confidences as bins, at least one; "
                         f"got {len(bin_counts)} counts, {len(bin_accuracy)} accuracies, "
                         f"{len(bin_confidence)} confidences")
    for k, (count, accuracy, confidence) in enumerate(zip(bin_counts, bin_accuracy, bin_confidence)):
        if count < 0 or (count == 0) != (accuracy is None) or (accuracy is None) != (confidence is None):
            raise ValueError(f"bin {k}: {count} images with accuracy {accuracy} and confidence {confidence}; an "
                             "empty bin has None for both, a filled one numbers")
    if not any(bin_counts):
        raise ValueError("every bin is empty: there is no reliability to draw")
