"""Study: how the step time and the text pass's share grow with the number of classes."""
from __future__ import annotations

from bench.settings import BenchSettings
from bench.step_time import first_setting, measure_setting

CLASS_COUNTS = (10, 50, 100, 200)  # Fashion-MNIST ... SUN397-scale text passes


def run(bench: BenchSettings, peak_flops: dict[str, float]) -> tuple[dict, list[dict]]:
    """LoRA on both encoders at each of CLASS_COUNTS; (summary by class count, rows)."""
    rows = [measure_setting(bench, peak_flops, first_setting(bench, num_classes=n)) for n in CLASS_COUNTS]
    summary = {row["num_classes"]: {"batch": row["batch"], "step_s": row["step_s"], "text_share": row["text_share"]}
               for row in rows}
    return summary, rows
