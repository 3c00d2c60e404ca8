"""The methods table: every method side by side, its cost beside its accuracy, sortable by any column.

One table per backbone and shot count: a row per method (with its variants, as the other tables
label them), with trainable parameters, the adapter's size on disk, the weight footprint, the
training time, the peak memory, and the zero-shot and test accuracy, mean ± sample std over seeds.
Where the runs cover several datasets the accuracies are the per-seed averages over datasets (as
the paper table's average column), flagged when a method lacks a dataset or a seed. Where the runs
have them (docs/evaluation.md), the same for the test set's calibration (ECE, NLL), OOD detection
(AUROC and FPR@95, each run's mean over its --ood_datasets) and forgetting (each run's mean change
from zero-shot over its --eval_datasets targets, in points).
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from qlora_clip.methods.table import METHODS
from qlora_clip.run.results import format_seconds
from summaries.cells import DRAWN_NOTE, Average, Cell, fewest_drawn, row_average
from summaries.output import csv_number, markdown_table, write_csv
from summaries.records import (DEVICES_NOTE, by_backbone, device_names, devices_mark, expected_seeds,
                               method_sort_key, ordered_datasets)


@dataclass
class MethodRow:
    method: str
    kind: str  # the table entry's: adapter, prompt, probe, training-free
    trainable_params: int | None
    adapter_mb: float | None
    footprint_mb: float | None
    train_seconds: float | None
    peak_memory_mb: float | None
    memory_kind: str
    devices: list[str]  # device_names of its runs
    zero_shot: Average
    test: Average
    ece: Average | None = None
    nll: Average | None = None
    ood_auroc: Average | None = None
    ood_fpr95: Average | None = None
    forgetting: Average | None = None


def _mean(runs: list[dict], field: str) -> float | None:
    values = [r[field] for r in runs if r.get(field) is not None]
    return statistics.fmean(values) if values else None


def _max(runs: list[dict], field: str) -> float | None:
    values = [r[field] for r in runs if r.get(field) is not None]
    return max(values) if values else None


def _accuracy(runs: list[dict], field: str, datasets: list[str], seeds: tuple[int, ...]) -> Average:
    """The accuracy `field` of `runs` over `datasets`; a trained accuracy (not the zero-shot one, which no
    draw touched) is marked where its runs drew fewer distinct images than their shots."""
    by_dataset: dict[str, dict[int, float]] = defaultdict(dict)
    for r in runs:
        if r.get(field) is not None:
            by_dataset[r["dataset_label"]][r["seed"]] = r[field]
    trained = field != "zero_shot_acc"
    cells = {d: Cell(v, seeds, fewest_drawn(r for r in runs if r["dataset_label"] == d) if trained else None)
             for d, v in by_dataset.items()}
    if len(datasets) == 1:
        cell = cells.get(datasets[0], Cell({}, seeds))
        return Average(cell.mean, cell.std, cell.n, [f"seeds missing: {cell.missing}"] if cell.missing else [],
                       cell.drawn)
    return row_average(cells, datasets)


# Column -> (header, the row's value to sort by, True when smaller is better).
COLUMNS: dict[str, tuple[str, Callable[[MethodRow], float | None], bool]] = {
    "method": ("Method", lambda row: None, True),
    "kind": ("Kind", lambda row: None, True),
    "trainable_params": ("Trainable params", lambda row: row.trainable_params, True),
    "adapter_mb": ("Adapter on disk (MB)", lambda row: row.adapter_mb, True),
    "footprint_mb": ("Weight footprint (MB)", lambda row: row.footprint_mb, True),
    "train_seconds": ("Training time", lambda row: row.train_seconds, True),
    "peak_memory_mb": ("Peak memory (MB)", lambda row: row.peak_memory_mb, True),
    "zero_shot": ("Zero-shot (%)", lambda row: row.zero_shot.mean, False),
    "test_acc": ("Test (%)", lambda row: row.test.mean, False),
    "test_ece": ("ECE (%)", lambda row: row.ece.mean, True),
    "test_nll": ("NLL", lambda row: row.nll.mean, True),
    "ood_auroc": ("OOD AUROC (%)", lambda row: row.ood_auroc.mean, False),
    "ood_fpr95": ("FPR@95 (%)", lambda row: row.ood_fpr95.mean, True),
    "forgetting": ("Δ on targets (pts)", lambda row: row.forgetting.mean, False),
}
SORT_KEYS = tuple(c for c in COLUMNS if c != "kind")
FIGURES_NOTE = ("ECE (%, 15 bins) and NLL: the reported model's on the test set; OOD AUROC and FPR@95: MCM scores, "
                "each run's mean over its --ood_datasets; Δ on targets: each run's mean change from zero-shot over "
                "its --eval_datasets targets (points; negative: forgotten); mean ± std over seeds as the accuracies.")
# Shown only where some row has them: lines before calibration, and runs without --ood_datasets or --eval_datasets.
OPTIONAL = ("test_ece", "test_nll", "ood_auroc", "ood_fpr95", "forgetting")
# Each run's figure of these columns (the mean over its OOD sets or targets), as `_accuracy` reads a field.
DERIVED = {
    "ood_auroc": lambda r: _mean_of(figures["auroc"] for figures in (r.get("ood") or {}).values()),
    "ood_fpr95": lambda r: _mean_of(figures["fpr95"] for figures in (r.get("ood") or {}).values()),
    "forgetting": lambda r: _mean_of(accs["test_acc"] - accs["zero_shot_acc"]
                                     for accs in (r.get("eval_datasets") or {}).values()),
}


def _mean_of(values) -> float | None:
    values = list(values)
    return statistics.fmean(values) if values else None


def method_rows(records: list[dict], seeds: tuple[int, ...]) -> list[MethodRow]:
    """One backbone and shot count's rows, in the table's method order."""
    datasets = ordered_datasets(records)
    runs_of: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        runs_of[r["method"]].append({**r, **{f"_{name}": value(r) for name, value in DERIVED.items()}})
    rows = []
    for method in sorted(runs_of, key=method_sort_key):
        runs = runs_of[method]
        trainable = _max(runs, "trainable_params")
        rows.append(MethodRow(
            method=method, kind=_kind(runs), trainable_params=int(trainable) if trainable is not None else None,
            adapter_mb=_mean(runs, "adapter_size_mb"), footprint_mb=_mean(runs, "model_footprint_mb"),
            train_seconds=_mean(runs, "train_seconds"), peak_memory_mb=_max(runs, "peak_memory_mb"),
            memory_kind=" ".join(sorted({str(r["memory_kind"]) for r in runs if r.get("memory_kind")})),
            devices=device_names(runs), zero_shot=_accuracy(runs, "zero_shot_acc", datasets, seeds),
            test=_accuracy(runs, "test_acc", datasets, seeds), ece=_accuracy(runs, "test_ece", datasets, seeds),
            nll=_accuracy(runs, "test_nll", datasets, seeds),
            **{name: _accuracy(runs, f"_{name}", datasets, seeds) for name in DERIVED}))
    return rows


def _kind(runs: list[dict]) -> str:
    """What the method trains, by its table entry (docs/methods.md); '?' for a method this version does not know."""
    return " ".join(sorted({METHODS[r["mode"]].kind if r["mode"] in METHODS else "?" for r in runs}))


def sorted_rows(rows: list[MethodRow], column: str) -> list[MethodRow]:
    """Best first by `column` (smallest cost, highest accuracy); rows without a value last; 'method': table order."""
    if column == "method":
        return list(rows)
    _, value, smaller_first = COLUMNS[column]
    present = [row for row in rows if value(row) is not None]
    missing = [row for row in rows if value(row) is None]
    return sorted(present, key=value, reverse=not smaller_first) + missing


def _number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _cells(row: MethodRow, columns: list[str]) -> list[str]:
    devices = devices_mark(row.devices)
    cells = {"method": row.method, "kind": row.kind,
             "trainable_params": "—" if row.trainable_params is None else f"{row.trainable_params:,}",
             "adapter_mb": _number(row.adapter_mb, 3), "footprint_mb": _number(row.footprint_mb),
             "train_seconds": "—" if row.train_seconds is None
             else format_seconds(row.train_seconds, hour_digits=2) + devices,
             "peak_memory_mb": "—" if row.peak_memory_mb is None else _number(row.peak_memory_mb, 0) + devices,
             "zero_shot": row.zero_shot.text(), "test_acc": row.test.text(), "test_ece": row.ece.text(),
             "test_nll": row.nll.text(), "ood_auroc": row.ood_auroc.text(), "ood_fpr95": row.ood_fpr95.text(),
             "forgetting": row.forgetting.text()}
    return [cells[column] for column in columns]


def shown_columns(rows: list[MethodRow]) -> list[str]:
    """Every column, but an optional one only where some row has its figure."""
    return [c for c in COLUMNS if c not in OPTIONAL or any(COLUMNS[c][1](row) is not None for row in rows)]


def methods_section(records: list[dict], seeds_given: tuple[int, ...] | None, out: Path, sort: str = "method") -> str:
    """The table of each backbone and shot count as Markdown; out/methods_table.csv gets the raw numbers."""
    parts, csv_rows = [], []
    for backbone, mine in by_backbone(records):
        for shots in sorted({r["shots"] for r in mine}):
            runs = [r for r in mine if r["shots"] == shots]
            seeds = expected_seeds(runs, seeds_given)
            datasets = ordered_datasets(runs)
            rows = sorted_rows(method_rows(runs, seeds), sort)
            columns = shown_columns(rows)
            header = [COLUMNS[c][0] for c in columns]
            over = datasets[0] if len(datasets) == 1 else f"the average over {len(datasets)} datasets"
            parts.append(f"## Methods, {backbone}, {shots} shots, {over}\n\n"
                         f"Sorted by {COLUMNS[sort][0].lower() if sort != 'method' else 'the methods table order'}"
                         f"{' (best first)' if sort != 'method' else ''}. Trainable params: the most of any run; "
                         "adapter on disk: the tensors --save_path writes; weight footprint: "
                         "`get_memory_footprint()`; training time: mean over runs (HH:MM:SS); peak memory: the "
                         f"highest ({', '.join(sorted({r.memory_kind for r in rows if r.memory_kind})) or '-'}); "
                         "accuracies: mean ± sample std over seeds, zero-shot on the base the method trains on."
                         + (f" {DEVICES_NOTE}" if any(len(row.devices) > 1 for row in rows) else "")
                         + (f" {DRAWN_NOTE}" if any(row.test.drawn is not None for row in rows) else "")
                         + (f" {FIGURES_NOTE}" if len(columns) > len(COLUMNS) - len(OPTIONAL) else "") + "\n\n"
                         + markdown_table(header, [_cells(row, columns) for row in rows]))
            csv_rows += [{"backbone": backbone, "shots": shots, "datasets": " ".join(datasets), "method": row.method,
                          "kind": row.kind, "trainable_params": row.trainable_params if row.trainable_params is not None else "",
                          "adapter_mb": csv_number(row.adapter_mb), "footprint_mb": csv_number(row.footprint_mb),
                          "train_seconds": csv_number(row.train_seconds),
                          "peak_memory_mb": csv_number(row.peak_memory_mb),
                          "memory_kind": row.memory_kind, "device_names": "; ".join(row.devices),
                          "zero_shot_mean": csv_number(row.zero_shot.mean),
                          "zero_shot_std": csv_number(row.zero_shot.std), "test_mean": csv_number(row.test.mean),
                          "test_std": csv_number(row.test.std), "n_seeds": row.test.n,
                          "complete": not row.test.problems,
                          "shots_drawn": "" if row.test.drawn is None else row.test.drawn,
                          **{f"{name}_{part}": csv_number(getattr(getattr(row, attr), part))
                             for name, attr in (("ece", "ece"), ("nll", "nll"), ("ood_auroc", "ood_auroc"),
                                                ("ood_fpr95", "ood_fpr95"), ("forgetting", "forgetting"))
                             for part in ("mean", "std")}}
                         for row in rows]
    write_csv(out / "methods_table.csv", csv_rows)
    return "\n\n".join(parts)
