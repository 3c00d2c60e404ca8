"""One benchmark run, in order: the matmul peak, the step-time grid, footprints, the studies, the report."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Callable

import torch

from bench import classes, dora_dropout, end_to_end, footprint, imagenet_shaped, methods, padding
from bench.harness import gemm_peaks, machine_info
from bench.settings import BenchSettings
from bench.step_time import compare_backbones, compute_ratios, measure_grid, shots_projection

log = logging.getLogger("bench")

# A study takes the settings and the run's GEMM peaks and returns (its summary, the rows it measured).
Study = Callable[[BenchSettings, dict[str, float]], tuple[dict, list[dict]]]

# The studies --studies can name, in the order they run and appear in the report.
STUDIES: dict[str, Study] = {
    "padding": padding.run,
    "dequant": footprint.run_dequant,
    "dora_dropout": dora_dropout.run,
    "classes": classes.run,
    "imagenet": imagenet_shaped.run,
    "protocol": end_to_end.run,
    "methods": methods.run,
}


def run_benchmark(bench: BenchSettings, command: str) -> dict:
    """Measure everything `bench` asks for; the report (rows, ratios, studies, machine, peaks)."""
    device = torch.device(bench.device)
    started = time.perf_counter()
    torch.manual_seed(0)
    peak = gemm_peaks(device, bench.compute_dtypes)
    start_peak = dict(peak)
    log.info("GEMM peak: %s", {k: f"{v / 1e9:.0f} GFLOP/s" for k, v in peak.items()})
    rows = measure_grid(bench, peak)
    weights = footprint.footprints(bench.backbone, device) if {"lora", "qlora"} <= set(bench.modes) else None
    studies = {}
    for name, study in STUDIES.items():
        if name in bench.studies:
            studies[name], study_rows = study(bench, peak)
            rows += [dict(row, study=name) for row in study_rows]
    if weights:
        studies["footprint_mb"] = weights
    studies["train_hours_vs_shots"] = shots_projection(rows)
    if bench.other_backbones:
        studies["backbones"] = compare_backbones(rows)
    # The machine is shared: measure the peak again at the end and keep the higher (conservative) value.
    peak_end = gemm_peaks(device, bench.compute_dtypes)
    for dtype, value in peak_end.items():
        if value > peak[dtype]:
            for row in rows:
                if row["dtype"] == dtype:
                    row["utilization"] *= peak[dtype] / value
            peak[dtype] = value
    return {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "args": asdict(bench), "machine": machine_info(device), "gemm_peak_flops": peak,
        "gemm_peak_flops_start_end": {d: [start_peak[d], peak_end[d]] for d in peak},
        "rows": rows, "ratios": compute_ratios(rows, weights), "studies": studies,
        "wall_s": time.perf_counter() - started,
    }
