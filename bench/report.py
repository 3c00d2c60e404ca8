"""The report of a benchmark run: the Markdown table it prints, and its files in the output folder.

Each run writes bench_results/bench-<preset>-<backbone>-<time>.json (every figure, the command,
machine, library versions, load average) and the same Markdown table as .md.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from bench.settings import BenchSettings
from bench.step_time import grid_rows


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict) -> str:
    """The grid as a table (a backbone column when several were measured), then the ratios, then each
    study's summary as JSON."""
    settings = report["args"]
    backbones = [settings["backbone"], *settings.get("other_backbones", [])]
    several = len(backbones) > 1
    peaks = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in report["gemm_peak_flops"].items())
    lines = [f"Backbone{'s' if several else ''} {', '.join(backbones)} (random weights), "
             f"{report['machine']['device_name']}, median of {settings['steps']} steps after {settings['warmup']} "
             f"warm-up; GEMM peak {peaks}.",
             "",
             ("| backbone " if several else "") + "| mode | encoder | batch | dtype | ckpt | step s | img/s | text % "
             "| image % | peak MB | footprint MB | eval img/s | GFLOP/step | util % | util % (GEMM around) |",
             ("|---" if several else "") + "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in grid_rows(report["rows"]):
        cells = [r["backbone"]] if several else []
        cells += [r["mode"], r["encoder"], str(r["batch"]), r["dtype"], _fmt(r["checkpointing"]), _fmt(r["step_s"], 3),
                  _fmt(r["images_per_s"], 1), _fmt(100 * r["text_share"], 0), _fmt(100 * r["image_share"], 0),
                  _fmt(r["peak_memory_mb"], 0), _fmt(r["footprint_mb"], 0), _fmt(r.get("eval_images_per_s"), 1),
                  _fmt(r["step_gflop"], 0), _fmt(100 * r["utilization"], 0),
                  _fmt(100 * r["utilization_vs_gemm_around"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| ratio | value |", "|---|---|"]
    for setting, values in report["ratios"].items():
        for name, value in values.items():
            if name != "vs_lora":
                lines.append(f"| {setting}: {name} | {_fmt(value, 3)} |")
    if several:
        lines += ["", f"| setting | family | step s | x {backbones[0]} | peak MB | x {backbones[0]} | footprint MB "
                      f"| x {backbones[0]} |", "|---|---|---|---|---|---|---|---|"]
        for setting, c in report["studies"]["backbones"].items():
            lines.append(f"| {setting} | {c['family']} | {_fmt(c['step_s'], 3)} | {_fmt(c['step_time_over_first'])} "
                         f"| {_fmt(c['peak_memory_mb'], 0)} | {_fmt(c['peak_memory_over_first'])} "
                         f"| {_fmt(c['footprint_mb'], 0)} | {_fmt(c['footprint_over_first'])} |")
    lines += _methods_table(report)
    for name, result in report["studies"].items():
        lines += ["", f"**{name}**: `{json.dumps(result, default=float)}`"]
    return "\n".join(lines) + "\n"


def _methods_table(report: dict) -> list[str]:
    """Every method's row beside its ratios to LoRA's at the same setting."""
    rows = {(r["mode"], r["backbone"], r["encoder"], r["batch"], r["dtype"], r["checkpointing"]): r
            for r in report["rows"] if r.get("study") in (None, "methods")}
    grid = [r for r in report["rows"] if r.get("study") is None]
    first = grid[0]["backbone"] if grid else None
    lines = []
    for setting, values in report["ratios"].items():
        ratios = values.get("vs_lora") if isinstance(values, dict) else None
        if not ratios:
            continue
        # step_time.compute_ratios' keys: [<backbone>_]<encoder>_b<batch>_<dtype>_ckpt<on|off>
        *prefix, encoder, batch, dtype, ckpt = setting.split("_")
        backbone = "_".join(prefix) or first
        key = (backbone, encoder, int(batch[1:]), dtype, ckpt == "ckpton")
        lines += ["", f"Methods against LoRA, {backbone}, {encoder} encoders, batch {key[2]}, {dtype}, "
                      f"checkpointing {'on' if key[4] else 'off'}:", "",
                  "| method | step s | time / LoRA | peak MB | memory / LoRA | footprint MB | footprint / LoRA "
                  "| trainable | trainable / LoRA |", "|---|---|---|---|---|---|---|---|---|"]
        for mode in ["lora", *ratios]:
            row = rows.get((mode, *key))
            if row is None:
                continue
            r = ratios.get(mode, {"time": 1.0, "peak_memory": 1.0, "footprint": 1.0, "trainable_params": 1.0})
            lines.append("| " + " | ".join([
                mode, _fmt(row["step_s"], 3), _fmt(r["time"], 2), _fmt(row["peak_memory_mb"], 0),
                _fmt(r["peak_memory"], 2), _fmt(row["footprint_mb"], 1), _fmt(r["footprint"], 3),
                f"{row.get('trainable_params', 0):,}", _fmt(r["trainable_params"], 3)]) + " |")
    return lines


def write_report(report: dict, bench: BenchSettings) -> Path:
    """Write the report's JSON and Markdown into bench.out_dir; return their common path without suffix."""
    out_dir = Path(bench.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = "+".join(backbone.replace("/", "-") for backbone in bench.backbones)
    stem = out_dir / f"bench-{bench.preset}-{names}-{datetime.now():%Y%m%d-%H%M%S}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=float))
    stem.with_suffix(".md").write_text(markdown(report))
    return stem
