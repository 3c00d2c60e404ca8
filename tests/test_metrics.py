"""The accuracy helpers: counts in, one division, percent out."""
import pytest
import torch

from qlora_clip.evaluation.metrics import accuracy_percent, count_correct, harmonic_mean


def test_count_correct_counts_top1_hits_without_leaving_the_device():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    hits = count_correct(logits, torch.tensor([1, 1, 1]))
    assert isinstance(hits, torch.Tensor)
    assert hits.item() == 2


def test_accuracy_is_percent_of_counts():
    assert accuracy_percent(2, 3) == pytest.approx(66.6667, rel=1e-5)
    assert accuracy_percent(0, 5) == 0.0
    assert accuracy_percent(5, 5) == 100.0
    with pytest.raises(ValueError):
        accuracy_percent(0, 0)


def test_harmonic_mean():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(50.0, 50.0) == 50.0
