"""qlora_clip/evaluation/calibration.py: ECE, NLL and Brier score on hand-computed cases, the bin edges, and
the sums that stream over batches and add up over processes."""
from __future__ import annotations

import math

import pytest
import torch

from qlora_clip.evaluation.metrics import count_correct
from qlora_clip.evaluation.calibration import (ECE_BINS, CalibrationAccumulator, bin_index, calibration,
                                               calibration_from_sums)


def two_class_logits(confidences: list[float]) -> torch.Tensor:
    """Logits [ln(p / (1 - p)), 0]: softmax gives p to class 0 and 1 - p to class 1."""
    return torch.tensor([[math.log(p / (1 - p)), 0.0] for p in confidences])


# Four images, two classes, predicted class 0 each time with confidence p:
#   image  p     label  correct  bin (k covers (k/15, (k+1)/15])
#   1      0.9   0      yes      13  (0.867, 0.933]
#   2      0.9   1      no       13
#   3      0.7   0      yes      10  (0.667, 0.733]
#   4      0.55  1      no        8  (0.533, 0.600]
# ECE = 2/4 |1/2 - 0.9| + 1/4 |1 - 0.7| + 1/4 |0 - 0.55| = 0.2 + 0.075 + 0.1375 = 0.4125
# NLL = -(ln 0.9 + ln 0.1 + ln 0.7 + ln 0.45) / 4   (the label's probability: p if correct, else 1 - p)
# Brier, two classes: correct 2 (1 - p)^2, wrong 2 p^2: (0.02 + 1.62 + 0.18 + 0.605) / 4 = 0.60625
HAND_P = [0.9, 0.9, 0.7, 0.55]
HAND_LABELS = torch.tensor([0, 1, 0, 1])


def test_hand_computed_ece_nll_brier():
    result = calibration(two_class_logits(HAND_P), HAND_LABELS)
    assert result.images == 4
    assert result.correct == 2
    assert result.accuracy == 0.5
    assert result.confidence == pytest.approx((0.9 + 0.9 + 0.7 + 0.55) / 4, abs=1e-6)
    assert result.ece == pytest.approx(0.4125, abs=1e-6)
    assert result.nll == pytest.approx(-(math.log(0.9) + math.log(0.1) + math.log(0.7) + math.log(0.45)) / 4,
                                       abs=1e-6)
    assert result.brier == pytest.approx(0.60625, abs=1e-6)
    expected_counts = [0] * 15
    expected_counts[13], expected_counts[10], expected_counts[8] = 2, 1, 1
    assert list(result.bin_counts) == expected_counts
    assert result.bins == ECE_BINS
    assert result.bin_accuracy[13] == 0.5
    assert result.bin_accuracy[10] == 1.0
    assert result.bin_accuracy[8] == 0.0
    assert result.bin_confidence[13] == pytest.approx(0.9, abs=1e-6)
    assert result.bin_accuracy[0] is None
    assert result.bin_confidence[0] is None


def test_three_class_brier_and_nll():
    # Logits ln[2, 1, 1]: p = [1/2, 1/4, 1/4]. Label 0: Brier (1/2)^2 + (1/4)^2 + (1/4)^2 = 3/8, NLL ln 2.
    # Label 2: (1/2)^2 + (1/4)^2 + (3/4)^2 = 7/8, NLL ln 4. Means: Brier 5/8, NLL (ln 2 + ln 4) / 2 = 1.5 ln 2.
    logits = torch.tensor([[2.0, 1.0, 1.0], [2.0, 1.0, 1.0]]).log()
    result = calibration(logits, torch.tensor([0, 2]))
    assert result.brier == pytest.approx(5 / 8, abs=1e-6)
    assert result.nll == pytest.approx(1.5 * math.log(2), abs=1e-6)
    # Both predict class 0 at confidence 1/2 (bin 7: (7/15, 8/15]), one right: ECE = |1/2 - 1/2| = 0.
    assert result.bin_counts[7] == 2
    assert result.ece == pytest.approx(0.0, abs=1e-6)


def test_a_confidence_on_a_bin_edge_falls_in_the_bin_below():
    # k equal logits give every class exactly the float 1/k (a correctly rounded division), the float
    # nearest k'/15 for k = 3, 5, 15 (k' = 5, 3, 1). Bins are closed on the right, so 5/15 is in bin 4.
    for classes, edge in ((3, 5), (5, 3), (15, 1)):
        result = calibration(torch.zeros(1, classes), torch.tensor([0]))
        assert result.bin_counts[edge - 1] == 1, classes
        assert result.bin_counts[edge] == 0, classes
    # A certain prediction (softmax exactly 1.0) is in the last bin, closed at 1.
    assert calibration(torch.tensor([[100.0, -100.0]]), torch.tensor([0])).bin_counts[14] == 1


def test_bin_index_at_and_beside_every_edge():
    edges = torch.arange(16, dtype=torch.float32) / 15
    # Exactly k/15 -> bin k - 1 (0 -> bin 0); just above -> bin k (up to the last bin, 14).
    assert bin_index(edges).tolist() == [0] + list(range(15))
    above = torch.nextafter(edges[:-1], torch.tensor(2.0))
    assert bin_index(above).tolist() == list(range(15))


def test_nll_of_extreme_logits_is_finite_and_exact():
    # Softmax of [1000, 0] is [1, 0] in float32; log_softmax still gives -1000 for class 1.
    result = calibration(torch.tensor([[1000.0, 0.0]]), torch.tensor([1]))
    assert result.nll == pytest.approx(1000.0)
    assert result.brier == pytest.approx(2.0)  # (1 - 0)^2 + (0 - 1)^2


def test_half_precision_logits_give_the_float32_figures():
    logits = two_class_logits([0.75, 0.25, 0.625])  # ln 3, -ln 3, ln(5/3): exact enough in float16
    labels = torch.tensor([0, 0, 1])
    full, half = calibration(logits, labels), calibration(logits.half(), labels)
    assert half.correct == full.correct
    assert half.bin_counts == full.bin_counts
    assert half.ece == pytest.approx(full.ece, abs=1e-3)
    assert half.nll == pytest.approx(full.nll, abs=1e-3)


def random_batch(images: int, classes: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (4 * torch.randn(images, classes, generator=generator),
            torch.randint(0, classes, (images,), generator=generator))


def test_streaming_over_batches_equals_one_batch():
    logits, labels = random_batch(53)
    streamed = CalibrationAccumulator()
    for start, stop in ((0, 10), (10, 41), (41, 53)):
        streamed.update(logits[start:stop], labels[start:stop])
    whole = calibration(logits, labels)
    assert streamed.result().bin_counts == whole.bin_counts
    assert streamed.result().correct == whole.correct == count_correct(logits, labels).item()
    torch.testing.assert_close(streamed.sums, calibration_sums_of(logits, labels), rtol=1e-12, atol=1e-12)
    for field in ("ece", "nll", "brier"):
        assert getattr(streamed.result(), field) == pytest.approx(getattr(whole, field), rel=1e-12)


def test_update_never_reads_a_value_back_from_the_device():
    # Tensors on the meta device have shapes but no values: any read-back (.item(), a data-dependent check,
    # a copy to the host) raises. A batch going through means the GPU would never wait on the metric.
    accumulator = CalibrationAccumulator(device="meta")
    for images in (4, 5):
        accumulator.update(torch.empty(images, 3, device="meta", dtype=torch.bfloat16),
                           torch.empty(images, dtype=torch.long, device="meta"))
    assert accumulator.sums.shape == (5 + 3 * ECE_BINS,)
    assert accumulator.sums.is_meta


def calibration_sums_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    accumulator = CalibrationAccumulator()
    accumulator.update(logits, labels)
    return accumulator.sums


def test_summed_per_process_sums_equal_the_whole():
    logits, labels = random_batch(40, seed=1)
    # Two "processes" with uneven shares and a third without a batch (zero sums on its device).
    shares = [CalibrationAccumulator(device="cpu") for _ in range(3)]
    shares[0].update(logits[:25], labels[:25])
    shares[1].update(logits[25:], labels[25:])
    summed = shares[0].sums + shares[1].sums + shares[2].sums  # what an all-reduce (SUM) leaves on each
    together, whole = calibration_from_sums(summed), calibration(logits, labels)
    assert together.images == 40
    assert together.bin_counts == whole.bin_counts
    assert together.ece == pytest.approx(whole.ece, rel=1e-12)
    assert together.brier == pytest.approx(whole.brier, rel=1e-12)
    # In place, as torch.distributed.all_reduce writes it: result() then reports the whole.
    shares[0].sums.add_(shares[1].sums)
    assert shares[0].result().nll == pytest.approx(whole.nll, rel=1e-12)


def test_other_bin_counts():
    result = calibration(two_class_logits(HAND_P), HAND_LABELS, bins=10)
    # 10 bins: 0.9 is in (0.8, 0.9] (bin 8), 0.7 in (0.6, 0.7] (bin 6), 0.55 in (0.5, 0.6] (bin 5).
    # ECE = 2/4 |0.5 - 0.9| + 1/4 |1 - 0.7| + 1/4 |0 - 0.55|, the same bins' contents as with 15.
    assert [i for i, n in enumerate(result.bin_counts) if n] == [5, 6, 8]
    assert result.bins == 10
    assert result.ece == pytest.approx(0.4125, abs=1e-6)


@pytest.mark.parametrize("logits, labels, message", [
    (torch.zeros(4), torch.zeros(4, dtype=torch.long), r"logits must be \(images, classes\)"),
    (torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), r"labels must be \(images,\) = \(2,\)"),
    (torch.zeros(2, 3), torch.zeros(2, 1, dtype=torch.long), r"labels must be \(images,\)"),
    (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long), "floating point"),
    (torch.zeros(2, 3), torch.zeros(2), "integer class indices"),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "empty batch"),
])
def test_bad_batches_are_named(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        CalibrationAccumulator().update(logits, labels)


def test_no_images_and_malformed_sums_are_refused():
    with pytest.raises(ValueError, match="no images were accumulated"):
        CalibrationAccumulator().result()
    with pytest.raises(ValueError, match=r"5 \+ 3 x bins"):
        calibration_from_sums(torch.zeros(5 + 3 * 15 + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="bins must be at least 1"):
        CalibrationAccumulator(bins=0)
