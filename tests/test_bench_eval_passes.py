"""bench/eval_passes.py: the figures beyond the accuracy add no pass over the test images (each way encodes every
image once), and the calibrated pass counts what the plain one counts."""
from __future__ import annotations

from bench.eval_passes import WAYS, markdown, run


def test_every_way_encodes_each_image_once_per_pass():
    result = run("tiny", images=70, classes=5, repeats=1, device_flag="cpu", threads=1)
    assert [row["way"] for row in result["rows"]] == list(WAYS)
    assert [row["passes"] for row in result["rows"]] == [1.0] * len(WAYS)
    assert all(len(row["seconds"]) == 1 for row in result["rows"])
    assert len({row["accuracy"] for row in result["rows"]}) == 1  # the same predictions counted every way
    assert "| calibration + logits |" in markdown(result)
