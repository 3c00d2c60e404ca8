"""Tables and a plot from results files.

    python summarize.py RESULTS.jsonl [MORE.jsonl ...] [--out DIR] [--tables paper,efficiency] [--plot] [--reference]

(a) the paper's table: rows = method x shots, columns = datasets + average, cells = mean ± sample std
    over seeds with the number of seeds; a cell that lacks one of the expected seeds is flagged;
(b) the efficiency table: training time, peak memory, model footprint and accuracy per dataset and shots,
    with a zero-shot row;
(c) a PNG of the average accuracy vs shots per method, optionally with the published CLIP-LoRA averages.
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

from methods import METHODS, MODES, zero_shot_label
from protocol import DATASET_TITLES, PAPER_DATASETS, PUBLISHED_CLIP_LORA
from results import IDENTITY_FIELDS, comparable_config, read_results

# Flags that place a record in a table cell rather than tell two methods apart.
CELL_FLAGS = set(IDENTITY_FIELDS)
TABLES = ("paper", "efficiency")
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
        config = {k: v for k, v in comparable_config(record.get("config", {})).items() if k not in CELL_FLAGS}
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


def hms(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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
                             hms(float(row["train_seconds"])) if row["train_seconds"] else "—",
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
    p.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated, from: {', '.join(TABLES)}")
    p.add_argument("--plot", action="store_true", help="write OUT/accuracy_vs_shots.png")
    p.add_argument("--reference", action="store_true",
                   help="draw the published CLIP-LoRA averages in the plot (implies --plot)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="seeds every cell should have (default: every seed found for the backbone)")
    args = p.parse_args(argv)
    args.tables = [t for t in args.tables.replace(" ", "").split(",") if t]
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
    records = latest_by_run(records)
    expected = tuple(sorted(set(args.seeds))) if args.seeds else None
    out = Path(args.out)
    rows = paper_rows(records, expected)
    sections = []
    if "paper" in args.tables:
        sections.append(paper_section(rows, records, out))
    if "efficiency" in args.tables:
        sections.append(efficiency_section(records, expected, out))
    print("\n\n".join(sections))
    written = [out / f"{t}_table.csv" for t in args.tables]
    if args.plot:
        plot(rows, records, out / "accuracy_vs_shots.png", args.reference)
        written.append(out / "accuracy_vs_shots.png")
    print(f"wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
