"""Tables and a plot from results files.

    python summarize.py RESULTS.jsonl [MORE.jsonl ...] [--out DIR] [--tables paper,...] [--plot] [--reference]

(a) the paper's table: rows = method x shots, columns = datasets + average, cells = mean ± sample std
    over seeds with the number of seeds; a cell that lacks one of the expected seeds is flagged;
(b) the efficiency table: training time, peak memory, model footprint and accuracy per dataset and shots,
    with a zero-shot row;
(c) a PNG of the average accuracy vs shots per method, optionally with the published CLIP-LoRA averages;
(d) the base-to-novel table (--protocol base2new runs): base / new / HM per dataset and their average,
    whose HM is the harmonic mean of the average base and the average new accuracy, optionally with
    the published averages of other methods;
(e) the cross-dataset transfer and domain generalization tables (runs with --eval_datasets): the source's
    accuracy, each target's, and the average over targets (other datasets; ImageNet's variants).
Tables (a), (b) and (c) read few-shot-protocol runs only (a line without "protocol" is one); (d) reads
base-to-novel runs only.
Markdown goes to stdout, CSV and PNG files to --out. Lines that cannot be read are reported with their
file and line number on stderr and skipped.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from metrics import harmonic_mean
from qlora_clip.methods import METHODS, MODES, zero_shot_label
from qlora_clip.paper import DATASET_TITLES, DOMAIN_TARGETS, PAPER_DATASETS, PUBLISHED_BASE2NEW, PUBLISHED_CLIP_LORA
from qlora_clip.results import IDENTITY_FIELDS, comparable_config, format_seconds, read_results

# Flags that place a record in a table cell rather than tell two methods apart.
CELL_FLAGS = set(IDENTITY_FIELDS)
# Flags that choose the table a record goes to, or add columns to it, rather than tell two methods
# apart: a base-to-novel 'lora' run is still 'lora', in its own table.
TABLE_FLAGS = {"protocol", "eval_datasets"}
TABLES = ("paper", "efficiency", "base2new", "cross_dataset", "domain_generalization")
FLAG = "⚠"


class SummaryError(Exception):
    """Nothing to summarize: the message names the file at fault."""


@dataclass
class Cell:
    """Accuracies of one (method, shots, dataset) by seed, and the seeds a complete cell has."""
    by_seed: dict[int, float]
    expected: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.by_seed.values()) if self.by_seed else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.by_seed.values()) if self.n >= 2 else None

    @property
    def missing(self) -> list[int]:
        return [s for s in self.expected if s not in self.by_seed]

    def text(self) -> str:
        if not self.by_seed:
            return "—"
        value = f"{self.mean:.2f}" + (f" ± {self.std:.2f}" if self.std is not None else "") + f" (n={self.n})"
        if self.missing:
            value = f"{FLAG} {value} no seed {','.join(map(str, self.missing))}"
        return value


@dataclass
class Average:
    """The across-datasets average of one table row."""
    mean: float | None
    std: float | None
    n: int
    problems: list[str]  # empty when every dataset has every expected seed

    def text(self) -> str:
        if self.mean is None:
            return "—"
        if self.problems:
            return f"{FLAG} {self.mean:.2f} partial: {'; '.join(self.problems)}"
        return f"{self.mean:.2f}" + (f" ± {self.std:.2f}" if self.std is not None else "") + (
            f" (n={self.n})" if self.n else "")


def row_average(cells: dict[str, Cell], datasets: list[str], per_seed: bool = True) -> Average:
    """Mean ± std over seeds of the per-seed average over datasets, when the row is complete.

    A row that lacks a dataset or a seed gets the mean of the dataset means it has, marked partial,
    so a hole in the sweep can never pass for a finished average. Without `per_seed` (zero-shot
    rows, whose value does not depend on the seed) the average is the mean of the dataset means.
    """
    present = [d for d in datasets if d in cells and cells[d].n]
    if not present:
        return Average(None, None, 0, ["no runs"])
    problems = []
    absent = [d for d in datasets if d not in present]
    if absent:
        problems.append(f"{len(present)}/{len(datasets)} datasets")
    short = [d for d in present if cells[d].missing]
    if short:
        problems.append("seeds missing in " + ", ".join(DATASET_TITLES.get(d, d) for d in short))
    if problems or not per_seed:
        return Average(statistics.fmean(cells[d].mean for d in present), None, 0, problems)
    seeds = cells[present[0]].expected
    per_seed = [statistics.fmean(cells[d].by_seed[s] for d in present) for s in seeds]
    std = statistics.stdev(per_seed) if len(per_seed) >= 2 else None
    return Average(statistics.fmean(per_seed), std, len(per_seed), [])


def load(paths: list[str]) -> list[dict]:
    records = []
    for path in paths:
        if not Path(path).is_file():
            raise SummaryError(f"{path}: no such results file")
        found, problems = read_results(path)
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
        records += found
    if not records:
        raise SummaryError(f"no readable results in {', '.join(paths)}")
    return records


def label_methods(records: list[dict]) -> None:
    """Set record['method']: the mode, plus its non-default flags where one mode ran with several configs.

    Smoke runs of 'qlora' with --n_iters 1 must not be averaged with the real ones: they become
    'qlora (n_iters=1)' while the runs with main.py's defaults stay 'qlora'.
    """
    defaults = comparable_config({})
    variants: dict[tuple, dict[str, dict]] = defaultdict(dict)
    keys = []
    for record in records:
        config = {k: v for k, v in comparable_config(record.get("config", {})).items()
                  if k not in CELL_FLAGS | TABLE_FLAGS}
        key = (record["backbone"], record["mode"])
        variants[key][repr(sorted(config.items()))] = config
        keys.append((key, config))
    for record, (key, config) in zip(records, keys):
        configs = list(variants[key].values())
        differing = sorted(k for k in config if len({repr(c.get(k)) for c in configs}) > 1
                           and config[k] != defaults.get(k))
        suffix = ", ".join(f"{k}={config[k]}" for k in differing)
        record["method"] = f"{record['mode']} ({suffix})" if suffix else record["mode"]


def latest_by_run(records: list[dict]) -> list[dict]:
    """One record per (backbone, method, dataset, shots, seed): the last line wins, and repeats are reported."""
    latest: dict[tuple, dict] = {}
    for record in records:
        latest[(record["backbone"], record["method"], record["dataset"], record["shots"], record["seed"])] = record
    repeats = len(records) - len(latest)
    if repeats:
        print(f"warning: {repeats} line(s) repeat a run already recorded; the last line of each run is used",
              file=sys.stderr)
    return list(latest.values())


def protocol_of(record: dict) -> str:
    return record.get("protocol", "fewshot")  # lines written before --protocol existed are few-shot runs


def zero_shot_settings(record: dict) -> dict:
    """What changes a zero-shot accuracy besides the dataset: the 4-bit base, the prompt template,
    the compute dtype (the backbone has a table of its own)."""
    method = METHODS.get(record["mode"])
    return {"quantized": record.get("quantized", bool(method and method.quantized)),
            "template": record.get("config", {}).get("template", "clip-lora"),
            "compute_dtype": record.get("compute_dtype")}


def label_zero_shot(records: list[dict]) -> None:
    """Set record['zero_shot_method']: one zero-shot row per setting of zero_shot_settings.

    The label names the settings that differ between the backbone's runs, so runs with another
    template or dtype get their own row instead of overwriting each other's cells.
    """
    by_backbone: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_backbone[record["backbone"]].append(record)
    for mine in by_backbone.values():
        settings = [zero_shot_settings(r) for r in mine]
        varies = {k for k in ("template", "compute_dtype") if len({s[k] for s in settings}) > 1}
        for record, setting in zip(mine, settings):
            details = []
            if "template" in varies and setting["template"] != "clip-lora":
                details.append(f"template={setting['template']}")
            if "compute_dtype" in varies:
                details.append(str(setting["compute_dtype"]))
            record["zero_shot_method"] = zero_shot_label(setting["quantized"], details)


def ordered_datasets(records: list[dict]) -> list[str]:
    names = {r["dataset"] for r in records}
    return [d for d in PAPER_DATASETS if d in names] + sorted(names - set(PAPER_DATASETS))


def method_sort_key(method: str) -> tuple:
    mode = method.split(" ")[0]
    return (MODES.index(mode) if mode in MODES else len(MODES), method)


@dataclass
class Row:
    backbone: str
    method: str
    shots: int
    expected: tuple[int, ...]
    cells: dict[str, Cell]
    average: Average

    def cell(self, dataset: str) -> Cell:
        return self.cells.get(dataset, Cell({}, self.expected))


def paper_rows(records: list[dict], expected_seeds: tuple[int, ...] | None) -> list[Row]:
    rows = []
    for backbone in sorted({r["backbone"] for r in records}):
        mine = [r for r in records if r["backbone"] == backbone]
        datasets = ordered_datasets(mine)
        seeds = expected_seeds or tuple(sorted({r["seed"] for r in mine}))
        # Zero-shot accuracy does not depend on the seed (frozen model, full test set): no seed is expected.
        zero: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        for r in mine:
            if r.get("zero_shot_acc") is not None:
                zero[r["zero_shot_method"]][r["dataset"]][r["seed"]] = r["zero_shot_acc"]
        for method in sorted(zero):
            cells = {d: Cell(v, tuple(v)) for d, v in zero[method].items()}
            rows.append(Row(backbone, method, 0, (), cells, row_average(cells, datasets, per_seed=False)))
        trained: dict[tuple[str, int], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        for r in mine:
            if r.get("test_acc") is not None:
                trained[(r["method"], r["shots"])][r["dataset"]][r["seed"]] = r["test_acc"]
        for method, shots in sorted(trained, key=lambda k: (method_sort_key(k[0]), k[1])):
            cells = {d: Cell(v, seeds) for d, v in trained[(method, shots)].items()}
            rows.append(Row(backbone, method, shots, seeds, cells, row_average(cells, datasets)))
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" :--- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def paper_section(rows: list[Row], records: list[dict], out: Path) -> str:
    parts = []
    csv_rows = []
    for backbone in dict.fromkeys(row.backbone for row in rows):
        mine = [row for row in rows if row.backbone == backbone]
        datasets = ordered_datasets([r for r in records if r["backbone"] == backbone])
        seeds = next((row.expected for row in mine if row.shots), ())
        header = ["Method", "Shots"] + [DATASET_TITLES.get(d, d) for d in datasets] + ["Average"]
        body = [[row.method, str(row.shots)] + [row.cell(d).text() for d in datasets]
                + [row.average.text()] for row in mine]
        parts.append(f"## Top-1 accuracy (%), {backbone}\n\n"
                     f"Mean ± sample std over seeds, n = seeds averaged; expected seeds: "
                     f"{', '.join(map(str, seeds)) or '—'}. {FLAG} marks a cell missing a seed or a partial "
                     "average (over the datasets and seeds that are there).\n\n" + markdown_table(header, body))
        for row in mine:
            for d in datasets:
                cell = row.cell(d)
                csv_rows.append({"backbone": backbone, "method": row.method, "shots": row.shots, "dataset": d,
                                 "mean": _num(cell.mean), "std": _num(cell.std), "n_seeds": cell.n,
                                 "seeds": " ".join(map(str, sorted(cell.by_seed))),
                                 "missing_seeds": " ".join(map(str, cell.missing)),
                                 "complete": bool(cell.n) and not cell.missing})
            csv_rows.append({"backbone": backbone, "method": row.method, "shots": row.shots, "dataset": "average",
                             "mean": _num(row.average.mean), "std": _num(row.average.std),
                             "n_seeds": row.average.n, "seeds": "", "missing_seeds": "; ".join(row.average.problems),
                             "complete": not row.average.problems})
    write_csv(out / "paper_table.csv", csv_rows)
    return "\n\n".join(parts)


def efficiency_section(records: list[dict], expected_seeds: tuple[int, ...] | None, out: Path) -> str:
    parts = []
    csv_rows = []
    for backbone in sorted({r["backbone"] for r in records}):
        mine = [r for r in records if r["backbone"] == backbone]
        seeds = expected_seeds or tuple(sorted({r["seed"] for r in mine}))
        body = []
        for dataset in ordered_datasets(mine):
            here = [r for r in mine if r["dataset"] == dataset]
            zero: dict[str, dict[int, float]] = defaultdict(dict)
            for r in here:
                if r.get("zero_shot_acc") is not None:
                    zero[r["zero_shot_method"]][r["seed"]] = r["zero_shot_acc"]
            for method, by_seed in sorted(zero.items()):
                cell = Cell(by_seed, tuple(by_seed))
                body.append([DATASET_TITLES.get(dataset, dataset), "0", method, "—", "—", "—", cell.text()])
                csv_rows.append(_efficiency_csv(backbone, dataset, 0, method, [], cell))
            groups: dict[tuple[int, str], list[dict]] = defaultdict(list)
            for r in here:
                groups[(r["shots"], r["method"])].append(r)
            for shots, method in sorted(groups, key=lambda k: (k[0], method_sort_key(k[1]))):
                runs = groups[(shots, method)]
                cell = Cell({r["seed"]: r["test_acc"] for r in runs if r.get("test_acc") is not None}, seeds)
                row = _efficiency_csv(backbone, dataset, shots, method, runs, cell)
                body.append([DATASET_TITLES.get(dataset, dataset), str(shots), method,
                             format_seconds(float(row["train_seconds"]), hour_digits=2) if row["train_seconds"] else "—",
                             _memory_text(row), f"{float(row['model_footprint_mb']):.1f}"
                             if row["model_footprint_mb"] else "—", cell.text()])
                csv_rows.append(row)
        header = ["Dataset", "Shots", "Method", "Training time", "Peak memory (MB)", "Model footprint (MB)",
                  "Accuracy (%)"]
        parts.append(f"## Efficiency, {backbone}\n\nTraining time: mean over seeds (HH:MM:SS); peak memory: "
                     "highest over seeds, of the kind named (cuda_allocated = PyTorch allocator peak on the GPU, "
                     "cpu_rss = peak resident memory of the process); accuracy: mean ± sample std over seeds.\n\n"
                     + markdown_table(header, body))
    write_csv(out / "efficiency_table.csv", csv_rows)
    return "\n\n".join(parts)


def _memory_text(row: dict) -> str:
    if not row["peak_memory_mb"]:
        return "—"
    text = f"{float(row['peak_memory_mb']):.0f} ({row['memory_kind']}"
    if row["peak_memory_reserved_mb"]:
        text += f"; {float(row['peak_memory_reserved_mb']):.0f} reserved"
    return text + ")"


def _efficiency_csv(backbone: str, dataset: str, shots: int, method: str, runs: list[dict], cell: Cell) -> dict:
    def mean_of(field: str) -> str:
        values = [r[field] for r in runs if r.get(field) is not None]
        return _num(statistics.fmean(values)) if values else ""

    def max_of(field: str) -> str:
        values = [r[field] for r in runs if r.get(field) is not None]
        return _num(max(values)) if values else ""

    return {"backbone": backbone, "dataset": dataset, "shots": shots, "method": method,
            "train_seconds": mean_of("train_seconds"), "total_steps": mean_of("total_steps"),
            "peak_memory_mb": max_of("peak_memory_mb"),
            "memory_kind": " ".join(sorted({str(r["memory_kind"]) for r in runs if r.get("memory_kind")})),
            "peak_memory_reserved_mb": max_of("peak_memory_reserved_mb"),
            "model_footprint_mb": mean_of("model_footprint_mb"), "trainable_params": max_of("trainable_params"),
            "accuracy_mean": _num(cell.mean), "accuracy_std": _num(cell.std), "n_seeds": cell.n,
            "missing_seeds": " ".join(map(str, cell.missing))}


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}".rstrip("0").rstrip(".")


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


# --- base-to-novel ------------------------------------------------------------------------------

@dataclass
class HarmonicCell:
    """HM of the mean base and the mean new accuracy (as the literature averages), ± sample std over
    seeds of the per-seed HM."""
    base: Cell
    new: Cell

    @property
    def mean(self) -> float | None:
        if self.base.mean is None or self.new.mean is None:
            return None
        return harmonic_mean(self.base.mean, self.new.mean)

    def per_seed(self) -> Cell:
        seeds = sorted(set(self.base.by_seed) & set(self.new.by_seed))
        return Cell({s: harmonic_mean(self.base.by_seed[s], self.new.by_seed[s]) for s in seeds}, self.base.expected)

    def text(self) -> str:
        if self.mean is None:
            return "—"
        per_seed = self.per_seed()
        std = f" ± {per_seed.std:.2f}" if per_seed.std is not None else ""
        value = f"{self.mean:.2f}{std} (n={per_seed.n})"
        missing = sorted(set(self.base.missing) | set(self.new.missing))
        return f"{FLAG} {value} no seed {','.join(map(str, missing))}" if missing else value


def harmonic_average(base: dict[str, Cell], new: dict[str, Cell], datasets: list[str], per_seed: bool) -> Average:
    """HM(average base, average new); its std is over seeds of HM(that seed's averages), when complete."""
    base_avg, new_avg = row_average(base, datasets, per_seed), row_average(new, datasets, per_seed)
    if base_avg.mean is None or new_avg.mean is None:
        return Average(None, None, 0, ["no runs"])
    problems = list(dict.fromkeys(base_avg.problems + new_avg.problems))
    mean = harmonic_mean(base_avg.mean, new_avg.mean)
    if problems or not per_seed:
        return Average(mean, None, 0, problems)
    seeds = base[datasets[0]].expected
    per_seed_hm = [harmonic_mean(statistics.fmean(base[d].by_seed[s] for d in datasets),
                                 statistics.fmean(new[d].by_seed[s] for d in datasets)) for s in seeds]
    return Average(mean, statistics.stdev(per_seed_hm) if len(per_seed_hm) >= 2 else None, len(per_seed_hm), [])


@dataclass
class Base2NewRow:
    backbone: str
    method: str
    shots: int
    expected: tuple[int, ...]
    base: dict[str, Cell]
    new: dict[str, Cell]

    def cells(self, dataset: str) -> tuple[Cell, Cell]:
        empty = Cell({}, self.expected)
        return self.base.get(dataset, empty), self.new.get(dataset, empty)


def base2new_rows(records: list[dict], expected_seeds: tuple[int, ...] | None) -> list[Base2NewRow]:
    """One row per method and shots (zero-shot rows first), base and new accuracies by dataset and seed."""
    rows = []
    for backbone in sorted({r["backbone"] for r in records}):
        mine = [r for r in records if r["backbone"] == backbone]
        seeds = expected_seeds or tuple(sorted({r["seed"] for r in mine}))
        groups: dict[tuple[str, int], dict[str, dict[str, dict[int, float]]]] = defaultdict(
            lambda: {"base": defaultdict(dict), "new": defaultdict(dict)})
        for r in mine:
            if r.get("zero_shot_base_acc") is not None and r.get("zero_shot_new_acc") is not None:
                group = groups[(r["zero_shot_method"], 0)]
                group["base"][r["dataset"]][r["seed"]] = r["zero_shot_base_acc"]
                group["new"][r["dataset"]][r["seed"]] = r["zero_shot_new_acc"]
            if r.get("base_acc") is not None and r.get("new_acc") is not None:
                group = groups[(r["method"], r["shots"])]
                group["base"][r["dataset"]][r["seed"]] = r["base_acc"]
                group["new"][r["dataset"]][r["seed"]] = r["new_acc"]
        for method, shots in sorted(groups, key=lambda k: (k[1] > 0, method_sort_key(k[0]), k[1])):
            group = groups[(method, shots)]
            # Zero-shot accuracy does not depend on the seed: no seed is expected.
            cells = {part: {d: Cell(v, seeds if shots else tuple(v)) for d, v in group[part].items()}
                     for part in ("base", "new")}
            rows.append(Base2NewRow(backbone, method, shots, seeds if shots else (), cells["base"], cells["new"]))
    return rows


def base2new_section(records: list[dict], expected_seeds: tuple[int, ...] | None, out: Path,
                     reference: bool) -> str:
    rows = base2new_rows(records, expected_seeds)
    parts, csv_rows = [], []
    for backbone in dict.fromkeys(row.backbone for row in rows):
        mine = [row for row in rows if row.backbone == backbone]
        datasets = ordered_datasets([r for r in records if r["backbone"] == backbone])
        header = ["Method", "Shots", "Classes"] + [DATASET_TITLES.get(d, d) for d in datasets] + ["Average"]
        body = []
        for row in mine:
            per_seed = bool(row.shots)
            cells = {d: row.cells(d) for d in datasets}
            averages = {"base": row_average(row.base, datasets, per_seed),
                        "new": row_average(row.new, datasets, per_seed),
                        "HM": harmonic_average(row.base, row.new, datasets, per_seed)}
            for part, pick in (("base", 0), ("new", 1)):
                body.append([row.method, str(row.shots), part] + [cells[d][pick].text() for d in datasets]
                            + [averages[part].text()])
            hm_cells = {d: HarmonicCell(*cells[d]) for d in datasets}
            body.append([row.method, str(row.shots), "HM"] + [hm_cells[d].text() for d in datasets]
                        + [averages["HM"].text()])
            for d in datasets:
                for part, cell in (("base", cells[d][0]), ("new", cells[d][1]), ("HM", hm_cells[d].per_seed())):
                    mean = hm_cells[d].mean if part == "HM" else cell.mean
                    csv_rows.append({"backbone": backbone, "method": row.method, "shots": row.shots, "dataset": d,
                                     "classes": part, "mean": _num(mean), "std": _num(cell.std), "n_seeds": cell.n,
                                     "missing_seeds": " ".join(map(str, cell.missing)),
                                     "complete": bool(cell.n) and not cell.missing})
            for part, average in averages.items():
                csv_rows.append({"backbone": backbone, "method": row.method, "shots": row.shots, "dataset": "average",
                                 "classes": part, "mean": _num(average.mean), "std": _num(average.std),
                                 "n_seeds": average.n, "missing_seeds": "; ".join(average.problems),
                                 "complete": not average.problems})
        parts.append(f"## Base-to-novel generalization, top-1 accuracy (%), {backbone}\n\n"
                     "Trained on the base half of each dataset's classes; base and new test images are each "
                     "classified among their own half's classes. Mean ± sample std over seeds (n = seeds). HM = "
                     "2 x base x new / (base + new) of the means; the average's HM is the HM of the average base "
                     f"and the average new accuracy. {FLAG} marks a missing seed or a partial average.\n\n"
                     + markdown_table(header, body))
    if reference:
        parts.append(published_base2new_section())
    write_csv(out / "base2new_table.csv", csv_rows)
    return "\n\n".join(parts)


def published_base2new_section() -> str:
    body = [[method, f"{base:.2f}", f"{new:.2f}", f"{hm:.2f}"]
            for method, (base, new, hm) in PUBLISHED_BASE2NEW.items()]
    return ("## Published base-to-novel averages (ViT-B/16, 16 shots, 11 datasets)\n\n"
            "As their authors report them; CLIP-LoRA's row is its run by CLIP-SVD's authors.\n\n"
            + markdown_table(["Method", "Base", "New", "HM"], body))


# --- cross-dataset transfer and domain generalization -------------------------------------------

TRANSFER_TABLES = {
    # table: (title, which --eval_datasets targets it shows)
    "cross_dataset": ("Cross-dataset transfer", lambda name: name not in DOMAIN_TARGETS),
    "domain_generalization": ("Domain generalization", lambda name: name in DOMAIN_TARGETS),
}


def ordered_targets(names: set[str]) -> list[str]:
    order = list(PAPER_DATASETS) + list(DOMAIN_TARGETS)
    return [d for d in order if d in names] + sorted(names - set(order))


@dataclass
class TransferRow:
    backbone: str
    method: str
    source: str
    shots: int
    source_cell: Cell
    targets: dict[str, Cell]


def transfer_rows(records: list[dict], shows: Callable[[str], bool],
                  expected_seeds: tuple[int, ...] | None) -> list[TransferRow]:
    """One row per (method, source dataset, shots), zero-shot rows first; cells by target and seed."""
    rows = []
    for backbone in sorted({r["backbone"] for r in records}):
        mine = [r for r in records if r["backbone"] == backbone]
        seeds = expected_seeds or tuple(sorted({r["seed"] for r in mine}))
        groups: dict[tuple[str, str, int], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        for r in mine:
            targets = {name: accs for name, accs in r["eval_datasets"].items() if shows(name)}
            if not targets:
                continue
            for key, source_field, target_field in (((r["zero_shot_method"], r["dataset"], 0), "zero_shot_acc",
                                                     "zero_shot_acc"),
                                                    ((r["method"], r["dataset"], r["shots"]), "test_acc", "test_acc")):
                if r.get(source_field) is not None:
                    groups[key][r["dataset"]][r["seed"]] = r[source_field]
                for name, accs in targets.items():
                    if accs.get(target_field) is not None:
                        groups[key][name][r["seed"]] = accs[target_field]
        for method, source, shots in sorted(groups, key=lambda k: (k[2] > 0, method_sort_key(k[0]), k[1], k[2])):
            by_dataset = groups[(method, source, shots)]
            cells = {d: Cell(v, seeds if shots else tuple(v)) for d, v in by_dataset.items()}
            rows.append(TransferRow(backbone, method, source, shots, cells.pop(source, Cell({}, seeds)), cells))
    return rows


def transfer_section(table: str, records: list[dict], expected_seeds: tuple[int, ...] | None, out: Path) -> str:
    title, shows = TRANSFER_TABLES[table]
    rows = transfer_rows(records, shows, expected_seeds)
    if not rows:
        return ""
    parts, csv_rows = [], []
    for backbone in dict.fromkeys(row.backbone for row in rows):
        mine = [row for row in rows if row.backbone == backbone]
        targets = ordered_targets({d for row in mine for d in row.targets})
        header = (["Method", "Shots", "Source", "Source accuracy"] + [DATASET_TITLES.get(d, d) for d in targets]
                  + ["Average over targets"])
        body = []
        for row in mine:
            expected = [d for d in targets if d != row.source]
            average = row_average(row.targets, expected, per_seed=bool(row.shots))
            body.append([row.method, str(row.shots), DATASET_TITLES.get(row.source, row.source), row.source_cell.text()]
                        + [row.targets[d].text() if d in row.targets else ("(source)" if d == row.source else "—")
                           for d in targets] + [average.text()])
            shown = [(row.source, row.source_cell)] + [(d, row.targets[d]) for d in expected if d in row.targets]
            for d, cell in shown:
                csv_rows.append({"backbone": backbone, "method": row.method, "shots": row.shots, "source": row.source,
                                 "dataset": d, "mean": _num(cell.mean), "std": _num(cell.std), "n_seeds": cell.n,
                                 "missing_seeds": " ".join(map(str, cell.missing)),
                                 "complete": bool(cell.n) and not cell.missing})
            csv_rows.append({"backbone": backbone, "method": row.method, "shots": row.shots, "source": row.source,
                             "dataset": "average", "mean": _num(average.mean), "std": _num(average.std),
                             "n_seeds": average.n, "missing_seeds": "; ".join(average.problems),
                             "complete": not average.problems})
        parts.append(f"## {title}, top-1 accuracy (%), {backbone}\n\n"
                     "One adapter per row, trained on the source dataset and evaluated on each target's full test "
                     "set with the target's own class names. Mean ± sample std over seeds (n = seeds); the average "
                     f"is over the targets shown. {FLAG} marks a missing seed or a partial average.\n\n"
                     + markdown_table(header, body))
    write_csv(out / f"{table}_table.csv", csv_rows)
    return "\n\n".join(parts)


def plot(rows: list[Row], records: list[dict], path: Path, reference: bool) -> None:
    """Average accuracy vs shots, one line per method (and backbone); hollow markers are partial averages."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    backbones = list(dict.fromkeys(row.backbone for row in rows))
    trained = [row for row in rows if row.shots and row.average.mean is not None]
    for backbone in backbones:
        for method in sorted({row.method for row in trained if row.backbone == backbone}, key=method_sort_key):
            line = sorted((row for row in trained if (row.backbone, row.method) == (backbone, method)),
                          key=lambda row: row.shots)
            label = method if len(backbones) == 1 else f"{method}, {backbone}"
            drawn = ax.plot([r.shots for r in line], [r.average.mean for r in line], "-", label=label)[0]
            for r in line:
                partial = bool(r.average.problems)
                ax.errorbar(r.shots, r.average.mean, yerr=r.average.std or 0, fmt="o", color=drawn.get_color(),
                            markerfacecolor="white" if partial else drawn.get_color(), capsize=3)
    shots_seen = sorted({row.shots for row in trained})
    if reference:
        ax.plot(list(PUBLISHED_CLIP_LORA), list(PUBLISHED_CLIP_LORA.values()), "--", color="gray",
                label="CLIP-LoRA, published (ViT-B/16, 11 datasets)")
        shots_seen = sorted(set(shots_seen) | set(PUBLISHED_CLIP_LORA))
        datasets = {r["dataset"] for r in records}
        if datasets != set(PAPER_DATASETS):
            print("note: the published CLIP-LoRA line averages the 11 paper datasets; these results cover "
                  f"{', '.join(sorted(datasets))}", file=sys.stderr)
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots_seen, [str(s) for s in shots_seen])
    ax.minorticks_off()
    ax.set_xlabel("shots per class")
    ax.set_ylabel("average top-1 accuracy (%)")
    n = len({r["dataset"] for r in records})
    ax.set_title(f"Average over {n} dataset{'s' * (n != 1)} (hollow: partial average)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="summarize.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("results", nargs="+", help="results files (JSON lines written by main.py)")
    p.add_argument("--out", default="results/summary", help="folder for the CSV and PNG files")
    p.add_argument("--tables", default=None,
                   help=f"comma-separated, from: {', '.join(TABLES)} (default: every table the results have runs for)")
    p.add_argument("--plot", action="store_true", help="write OUT/accuracy_vs_shots.png")
    p.add_argument("--reference", action="store_true",
                   help="draw the published CLIP-LoRA averages in the plot (implies --plot) and print the "
                        "published base-to-novel averages under the base-to-novel table")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="seeds every cell should have (default: every seed found for the backbone)")
    args = p.parse_args(argv)
    # Asked-for tables that have no runs get a note; by default they are silently left out.
    args.tables_named = args.tables is not None
    args.tables = [t for t in (args.tables or ",".join(TABLES)).replace(" ", "").split(",") if t]
    unknown = sorted(set(args.tables) - set(TABLES))
    if unknown:
        p.error(f"--tables: unknown table {', '.join(unknown)}; choose from {', '.join(TABLES)}")
    args.plot = args.plot or args.reference
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        records = load(args.results)
    except SummaryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    label_methods(records)
    label_zero_shot(records)
    fewshot = latest_by_run([r for r in records if protocol_of(r) == "fewshot"])
    base2new = latest_by_run([r for r in records if protocol_of(r) == "base2new"])
    transfer = latest_by_run([r for r in records if protocol_of(r) == "fewshot" and r.get("eval_datasets")])
    expected = tuple(sorted(set(args.seeds))) if args.seeds else None
    out = Path(args.out)
    rows = paper_rows(fewshot, expected)
    builders = {
        "paper": lambda: paper_section(rows, fewshot, out) if rows else "",
        "efficiency": lambda: efficiency_section(fewshot, expected, out) if fewshot else "",
        "base2new": lambda: base2new_section(base2new, expected, out, args.reference) if base2new else "",
        "cross_dataset": lambda: transfer_section("cross_dataset", transfer, expected, out),
        "domain_generalization": lambda: transfer_section("domain_generalization", transfer, expected, out),
    }
    sections, written = [], []
    for table in args.tables:
        text = builders[table]()
        if text:
            sections.append(text)
            written.append(out / f"{table}_table.csv")
        elif args.tables_named:
            print(f"note: no runs for the {table} table in {', '.join(args.results)}", file=sys.stderr)
    print("\n\n".join(sections))
    if args.plot and rows:
        plot(rows, fewshot, out / "accuracy_vs_shots.png", args.reference)
        written.append(out / "accuracy_vs_shots.png")
    elif args.plot:
        print("note: no few-shot runs, so no accuracy-vs-shots plot", file=sys.stderr)
    print(f"wrote {', '.join(map(str, written)) or 'nothing'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
