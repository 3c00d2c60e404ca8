"""The efficiency table: training time, peak memory, footprint and accuracy per dataset, shots and method."""
from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from qlora_clip.paper import DATASET_TITLES
from qlora_clip.run.results import format_seconds
from summaries.cells import DRAWN_NOTE, Cell, fewest_drawn
from summaries.output import csv_number, markdown_table, write_csv
from summaries.records import (DEVICES_NOTE, backbone_title, by_backbone, device_names, devices_mark, expected_seeds,
                               method_sort_key, ordered_datasets)


def efficiency_section(records: list[dict], seeds_given: tuple[int, ...] | None, out: Path) -> str:
    """The table of each backbone as Markdown; out/efficiency_table.csv gets the raw numbers."""
    parts = []
    csv_rows = []
    for backbone, mine in by_backbone(records):
        seeds = expected_seeds(mine, seeds_given)
        body, notes = [], set()
        for dataset in ordered_datasets(mine):
            for shots, method, runs, cell in _groups([r for r in mine if r["dataset_label"] == dataset], seeds):
                row = _efficiency_csv(backbone, dataset, shots, method, runs, cell)
                devices = devices_mark(device_names(runs))
                body.append([DATASET_TITLES.get(dataset, dataset), str(shots), method, _time_text(row) + devices,
                             _memory_text(row) + devices, _footprint_text(row), cell.text()])
                csv_rows.append(row)
                notes |= ({DEVICES_NOTE} if devices else set()) | ({DRAWN_NOTE} if cell.drawn is not None else set())
        header = ["Dataset", "Shots", "Method", "Training time", "Peak memory (MB)", "Model footprint (MB)",
                  "Accuracy (%)"]
        title = backbone_title(backbone, mine)
        parts.append(f"## Efficiency, {title}\n\nTraining time: mean over seeds (HH:MM:SS); peak memory: "
                     "highest over seeds, of the kind named (cuda_allocated = PyTorch allocator peak on the GPU, "
                     "cpu_rss = peak resident memory of the process); accuracy: mean ± sample std over seeds."
                     + "".join(f" {note}" for note in sorted(notes)) + "\n\n" + markdown_table(header, body))
    write_csv(out / "efficiency_table.csv", csv_rows)
    return "\n\n".join(parts)


def _groups(records: list[dict], seeds: tuple[int, ...]) -> Iterator[tuple[int, str, list[dict], Cell]]:
    """(shots, method, runs, accuracy cell) of one dataset's rows: the zero-shot ones first, with no
    runs (training costs nothing there), then the trained ones by shots."""
    zero: dict[str, dict[int, float]] = defaultdict(dict)
    trained: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for r in records:
        if r.get("zero_shot_acc") is not None:
            zero[r["zero_shot_method"]][r["seed"]] = r["zero_shot_acc"]
        trained[(r["shots"], r["method"])].append(r)
    for method, by_seed in sorted(zero.items()):
        yield 0, method, [], Cell.for_row(by_seed, 0, seeds)
    for shots, method in sorted(trained, key=lambda k: (k[0], method_sort_key(k[1]))):
        runs = trained[(shots, method)]
        yield shots, method, runs, Cell.for_row({r["seed"]: r["test_acc"] for r in runs
                                                if r.get("test_acc") is not None}, shots, seeds, fewest_drawn(runs))


def _time_text(row: dict) -> str:
    return format_seconds(float(row["train_seconds"]), hour_digits=2) if row["train_seconds"] else "—"


def _footprint_text(row: dict) -> str:
    return f"{float(row['model_footprint_mb']):.1f}" if row["model_footprint_mb"] else "—"


def _memory_text(row: dict) -> str:
    if not row["peak_memory_mb"]:
        return "—"
    text = f"{float(row['peak_memory_mb']):.0f} ({row['memory_kind']}"
    if row["peak_memory_reserved_mb"]:
        text += f"; {float(row['peak_memory_reserved_mb']):.0f} reserved"
    return text + ")"


def _efficiency_csv(backbone: str, dataset: str, shots: int, method: str, runs: list[dict], cell: Cell) -> dict:
    """One CSV row: the runs' means (time, steps, footprint) and highest values (memory, parameters)."""
    def mean_of(field: str) -> str:
        values = [r[field] for r in runs if r.get(field) is not None]
        return csv_number(statistics.fmean(values)) if values else ""

    def max_of(field: str) -> str:
        values = [r[field] for r in runs if r.get(field) is not None]
        return csv_number(max(values)) if values else ""

    return {"backbone": backbone, "dataset": dataset, "shots": shots, "method": method,
            "train_seconds": mean_of("train_seconds"), "total_steps": mean_of("total_steps"),
            "peak_memory_mb": max_of("peak_memory_mb"),
            "memory_kind": " ".join(sorted({str(r["memory_kind"]) for r in runs if r.get("memory_kind")})),
            "device_names": "; ".join(device_names(runs)),
            "peak_memory_reserved_mb": max_of("peak_memory_reserved_mb"),
            "model_footprint_mb": mean_of("model_footprint_mb"), "trainable_params": max_of("trainable_params"),
            "accuracy_mean": csv_number(cell.mean), "accuracy_std": csv_number(cell.std), "n_seeds": cell.n,
            "missing_seeds": " ".join(map(str, cell.missing)), "shots_drawn": "" if cell.drawn is None else cell.drawn}
