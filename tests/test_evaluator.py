"""qlora_clip/evaluation/evaluator.py: test-set accuracy, with the image features of a frozen vision tower reused."""
from __future__ import annotations

import pytest
import torch

import main
from qlora_clip.evaluation.calibration import CalibrationAccumulator
from qlora_clip.methods.interface import Adapted


@pytest.mark.parametrize("encoder, passes", [("text", 1), ("both", 2)])
def test_frozen_vision_tower_encodes_the_test_images_once(encoder, passes, tiny_argv, tmp_path, monkeypatch):
    encoded = []
    image_embeddings = Adapted.image_embeddings  # what the evaluator encodes the test images with

    def counting(adapted, images):
        encoded.append(len(images))
        return image_embeddings(adapted, images)
    monkeypatch.setattr(Adapted, "image_embeddings", counting)
    # A fresh cache folder: nothing an earlier test stored (zero-shot accuracies, embeddings) is read instead.
    record = main.main(tiny_argv("--encoder", encoder, "--n_iters", "0", "--no_zero_shot_cache",
                                 "--eval_cache_dir", str(tmp_path / "cache")))
    assert sum(encoded) == passes * 16  # the colour folder's test split has 16 images
    assert record["test_acc"] == record["zero_shot_acc"]


def test_a_stored_zero_shot_pass_needs_its_calibration_sums():
    """A zero-shot store entry is the pass only with the calibration sums of the pass; an entry written before they
    were stored (or of another bin count) is computed again."""
    from qlora_clip.evaluation.calibration import calibration
    from qlora_clip.evaluation.evaluator import _stored_evaluation

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.5]])
    labels = torch.tensor([0, 0, 0])
    accumulator = CalibrationAccumulator()
    accumulator.update(logits, labels)
    stored = _stored_evaluation({"zero_shot_acc": 200 / 3, "calibration_sums": accumulator.sums.tolist()})
    assert stored.calibration == calibration(logits, labels)
    assert stored.accuracy == 200 / 3
    assert _stored_evaluation({"zero_shot_acc": 50.0, "calibration_sums": None}) is None
    assert _stored_evaluation({"zero_shot_acc": 50.0, "calibration_sums": [1.0, 2.0]}) is None
    assert _stored_evaluation(None) is None
