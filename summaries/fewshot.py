"""The paper's few-shot table: rows = method x shots, columns = datasets and their average."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

from qlora_clip.paper import DATASET_TITLES
from summaries.cells import DRAWN_NOTE, FLAG, Average, Cell, Row, drawn_by, row_average
from summaries.output import average_columns, cell_columns, markdown_table, write_csv
from summaries.records import backbone_title, by_backbone, expected_seeds, method_sort_key, ordered_datasets


@dataclass
class PaperRow(Row):
    cells: dict[str, Cell]
    average: Average

    def cell(self, dataset: str) -> Cell:
        return self.cells.get(dataset, self.empty_cell())


def paper_rows(records: list[dict], seeds_given: tuple[int, ...] | None) -> list[PaperRow]:
    """Per backbone, the zero-shot rows, then one row per method and shots; the plot draws them too."""
    rows = []
    for backbone, mine in by_backbone(records):
        datasets = ordered_datasets(mine)
        seeds = expected_seeds(mine, seeds_given)
        drawn = drawn_by(mine, lambda r: (r["method"], r["shots"], r["dataset_label"]))
        zero: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        trained: dict[tuple[str, int], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        for r in mine:
            if r.get("zero_shot_acc") is not None:
                zero[r["zero_shot_method"]][r["dataset_label"]][r["seed"]] = r["zero_shot_acc"]
            if r.get("test_acc") is not None:
                trained[(r["method"], r["shots"])][r["dataset_label"]][r["seed"]] = r["test_acc"]
        for method in sorted(zero):
            cells = {d: Cell.for_row(v, 0, seeds) for d, v in zero[method].items()}
            rows.append(PaperRow(backbone, method, 0, (), cells, row_average(cells, datasets, per_seed=False)))
        for method, shots in sorted(trained, key=lambda k: (method_sort_key(k[0]), k[1])):
            cells = {d: Cell.for_row(v, shots, seeds, drawn.get((method, shots, d)))
                     for d, v in trained[(method, shots)].items()}
            rows.append(PaperRow(backbone, method, shots, seeds, cells, row_average(cells, datasets)))
    return rows


def paper_section(rows: list[PaperRow], records: list[dict], out: Path) -> str:
    """The table of each backbone as Markdown; out/paper_table.csv gets every cell and average."""
    parts = []
    csv_rows = []
    records_of = dict(by_backbone(records))
    for backbone, mine in by_backbone(rows, attrgetter("backbone")):
        datasets = ordered_datasets(records_of[backbone])
        seeds = next((row.expected for row in mine if row.shots), ())
        header = ["Method", "Shots"] + [DATASET_TITLES.get(d, d) for d in datasets] + ["Average"]
        body = [[row.method, str(row.shots)] + [row.cell(d).text() for d in datasets]
                + [row.average.text()] for row in mine]
        over_drawn = any(row.average.drawn is not None for row in mine)
        parts.append(f"## Top-1 accuracy (%), {backbone_title(backbone, records_of[backbone])}\n\n"
                     f"Mean ± sample std over seeds, n = seeds averaged; expected seeds: "
                     f"{', '.join(map(str, seeds)) or '—'}. {FLAG} marks a cell missing a seed or a partial "
                     "average (over the datasets and seeds that are there)."
                     + (f" {DRAWN_NOTE}" if over_drawn else "") + "\n\n" + markdown_table(header, body))
        for row in mine:
            csv_rows += [{**row.columns(), "dataset": d, **cell_columns(row.cell(d), list_seeds=True)}
                         for d in datasets]
            csv_rows.append({**row.columns(), "dataset": "average", **average_columns(row.average, list_seeds=True)})
    write_csv(out / "paper_table.csv", csv_rows)
    return "\n\n".join(parts)
