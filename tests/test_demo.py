"""The offline demo's promise: on real Fashion-MNIST images, training beats zero-shot."""
from __future__ import annotations

import statistics

import pytest

import main
from datasets.fashion_mnist import SYSTEM_FOLDER


@pytest.mark.skipif(not SYSTEM_FOLDER.exists(), reason="apt-get install dataset-fashion-mnist")
def test_lora_on_fashion_mnist_lowers_the_loss_and_beats_zero_shot(tmp_path, monkeypatch):
    losses = []
    import trainer
    train = trainer.train

    def keep_losses(*args, **kwargs):
        result = train(*args, **kwargs)
        losses.extend(result.losses)
        return result
    monkeypatch.setattr(main, "train", keep_losses)
    # run_demo.sh's settings, with fewer steps (5 x 16)
    record = main.main(["--backbone", "tiny", "--dataset", "fashion_mnist", "--root_path", str(tmp_path),
                        "--shots", "16", "--mode", "lora", "--r", "8", "--lr", "5e-3", "--n_iters", "5",
                        "--results_file", str(tmp_path / "demo.jsonl")])
    assert len(losses) == record["total_steps"] == 80
    assert statistics.mean(losses[-10:]) < 0.8 * statistics.mean(losses[:10])
    assert record["test_acc"] > record["zero_shot_acc"] + 5
