"""Study: every method of the table at the grid's first setting, for a preset whose grid has only some.

The GPU preset's grid covers LoRA, QLoRA, DoRA and QDoRA at both encoder settings with and without
gradient checkpointing; this study adds every other method (methods.NAMED_MODES) once, on both
encoders without checkpointing, so each gets its row and its ratios to LoRA's row at that setting
(step_time.compute_ratios).
"""
from __future__ import annotations

from bench.settings import BenchSettings
from bench.step_time import first_setting, measure_setting
from qlora_clip.methods.table import NAMED_MODES


def run(bench: BenchSettings, peak_flops: dict[str, float]) -> tuple[dict, list[dict]]:
    """The methods the grid lacks, at its first setting; (summary by method, rows)."""
    rows = [measure_setting(bench, peak_flops, first_setting(bench, mode)) for mode in NAMED_MODES
            if mode not in bench.modes]
    summary = {row["mode"]: {k: row[k] for k in ("step_s", "peak_memory_mb", "footprint_mb", "trainable_params")}
               for row in rows}
    return summary, rows
