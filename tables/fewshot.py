"""The paper's few-shot table: rows = method x shots, columns = datasets and their average."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from qlora_clip.paper import DATASET_TITLES
from tables.cells import FLAG, Average, Cell, row_average
from tables.output import csv_number, markdown_table, write_csv
from tables.records import method_sort_key, ordered_datasets


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
                                 "mean": csv_number(cell.mean), "std": csv_number(cell.std), "n_seeds": cell.n,
                                 "seeds": " ".join(map(str, sorted(cell.by_seed))),
                                 "missing_seeds": " ".join(map(str, cell.missing)),
                                 "complete": bool(cell.n) and not cell.missing})
            csv_rows.append({"backbone": backbone, "method": row.method, "shots": row.shots, "dataset": "average",
                             "mean": csv_number(row.average.mean), "std": csv_number(row.average.std),
                             "n_seeds": row.average.n, "seeds": "", "missing_seeds": "; ".join(row.average.problems),
                             "complete": not row.average.problems})
    write_csv(out / "paper_table.csv", csv_rows)
    return "\n\n".join(parts)
