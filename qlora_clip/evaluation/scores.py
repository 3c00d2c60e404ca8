"""What one evaluation pass gives back (`Evaluation`), and putting the processes' shares of it together.

A pass over a test set (evaluator.Evaluator.evaluate) counts the correct predictions and feeds the
same logits to a calibration.CalibrationAccumulator; on request it also keeps, per image, the logits
(--save_predictions) or only MCM's score (ood.mcm_score: --ood_datasets), so that no figure needs a
second pass. With several processes each holds its share of the images (items[rank::world]):
`sum_over_processes` adds the calibration sums, `gathered_in_order` puts the kept rows back in the
test set's own order, so every process ends with the whole set's figures.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qlora_clip.evaluation.calibration import Calibration
from qlora_clip.training.distributed import Distributed

# What a pass keeps per image besides the counts: nothing, MCM's score, or the logits (and the labels).
KEEP = (None, "scores", "logits")


@dataclass
class Evaluation:
    """One pass's figures over every process's images."""
    accuracy: float                     # top-1, percent
    calibration: Calibration
    logits: torch.Tensor | None = None  # (images, classes) float32, in the test set's order (keep="logits")
    labels: torch.Tensor | None = None  # (images,), with the logits
    scores: torch.Tensor | None = None  # (images,) MCM scores (keep="scores" or "logits")
    calibration_sums: list[float] | None = None  # what `calibration` was computed from (the zero-shot store keeps it)

    def fields(self, prefix: str) -> dict:
        """The line's calibration figures of this pass: `<prefix>_ece` (percent, as the accuracies), `_nll`, `_brier`."""
        c = self.calibration
        return {f"{prefix}_ece": 100 * c.ece, f"{prefix}_nll": c.nll, f"{prefix}_brier": c.brier}

    def bins(self) -> dict:
        """The reliability diagram's numbers (fractions), as the line carries them (summaries/reliability.py)."""
        c = self.calibration
        return {"bin_counts": list(c.bin_counts), "bin_accuracy": list(c.bin_accuracy),
                "bin_confidence": list(c.bin_confidence), "confidence": c.confidence}


def sum_over_processes(dist: Distributed, sums: torch.Tensor) -> torch.Tensor:
    """`sums` (float64) summed over the processes; itself with one process."""
    if dist.world > 1:
        torch.distributed.all_reduce(sums, op=torch.distributed.ReduceOp.SUM)
    return sums


def gathered_in_order(dist: Distributed, rows: torch.Tensor) -> torch.Tensor:
    """Every process's `rows` (its share items[rank::world] of a test set, in that order) as the whole set's rows
    in the set's own order: row i of process r is image r + i x world. Shares differ in length by at most one."""
    if dist.world == 1:
        return rows
    counts = dist.gather_count(rows.shape[0])
    padded = rows.new_zeros((max(counts), *rows.shape[1:]))
    padded[:rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in range(dist.world)]
    torch.distributed.all_gather(parts, padded.contiguous())
    whole = rows.new_empty((sum(counts), *rows.shape[1:]))
    for rank, (part, count) in enumerate(zip(parts, counts)):
        whole[rank::dist.world] = part[:count]
    return whole
