"""summaries/reliability.py: the reliability diagram is a PNG of the expected size with its bars drawn."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from summaries.reliability import ACCURACY_COLOR, GAP_ALPHA, GAP_COLOR, draw_reliability_diagram

# The hand-computed case of tests/test_evaluation_calibration.py: 15 bins, four images in bins 8, 10, 13.
COUNTS = [0] * 8 + [1, 0, 1, 0, 0, 2, 0]
ACCURACY = [None] * 8 + [0.0, None, 1.0, None, None, 0.5, None]
CONFIDENCE = [None] * 8 + [0.55, None, 0.7, None, None, 0.9, None]


def rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)


ACCURACY_RGB = rgb(ACCURACY_COLOR)
GAP_RGB = GAP_ALPHA * rgb(GAP_COLOR) + (1 - GAP_ALPHA) * 255  # the shading over the white background


def pixels_of(path, color: np.ndarray) -> int:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    return int((np.abs(pixels - color).max(axis=-1) <= 3).sum())


def test_diagram_is_a_450_pixel_png_with_bars_and_gaps(tmp_path):
    path = tmp_path / "plots" / "reliability.png"
    draw_reliability_diagram(path, COUNTS, ACCURACY, CONFIDENCE, ece=0.4125, title="lora, dtd, 16 shots")
    assert path.stat().st_size > 0
    assert not list(path.parent.glob("*.tmp.png"))
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (450, 450)  # 4.5 inches at 100 dpi
    # The bars of bins 10 and 13 (accuracy 1 and 0.5), and the shaded gaps above bins 8 and 13 (0.55, 0.4):
    # each gap is about 0.4 x 360 pixels of axes high and 24 wide.
    assert pixels_of(path, ACCURACY_RGB) > 5000
    assert pixels_of(path, GAP_RGB) > 3000


def test_a_calibrated_diagram_has_no_gap_shading(tmp_path):
    path = tmp_path / "calibrated.png"
    draw_reliability_diagram(path, [0, 2, 2], [None, 0.5, 0.8], [None, 0.5, 0.8], ece=0.0)
    assert pixels_of(path, ACCURACY_RGB) > 5000
    assert pixels_of(path, GAP_RGB) < 500  # the legend's patch only


@pytest.mark.parametrize("counts, accuracy, confidence, message", [
    ([1, 2], [0.5], [0.5, 0.6], "as many accuracies and confidences as bins"),
    ([], [], [], "at least one"),
    ([0, 1], [0.3, 1.0], [None, 0.9], "bin 0: 0 images with accuracy 0.3"),
    ([1], [None], [None], "bin 0: 1 images"),
    ([0, 0], [None, None], [None, None], "every bin is empty"),
])
def test_inconsistent_bins_are_refused(tmp_path, counts, accuracy, confidence, message):
    with pytest.raises(ValueError, match=message):
        draw_reliability_diagram(tmp_path / "x.png", counts, accuracy, confidence, ece=0.1)
    assert not (tmp_path / "x.png").exists()
