"""The base-to-novel table: base, new and HM accuracy per dataset, and the published averages."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from qlora_clip.paper import DATASET_TITLES, PUBLISHED_BASE2NEW
from summaries.cells import DRAWN_NOTE, FLAG, Cell, HarmonicCell, Row, drawn_by, harmonic_average, row_average
from summaries.output import average_columns, cell_columns, markdown_table, write_csv
from summaries.records import backbone_title, by_backbone, expected_seeds, method_sort_key, ordered_datasets


@dataclass
class Base2NewRow(Row):
    base: dict[str, Cell]
    new: dict[str, Cell]

    def cells(self, dataset: str) -> tuple[Cell, Cell]:
        return self.base.get(dataset, self.empty_cell()), self.new.get(dataset, self.empty_cell())


def base2new_rows(records: list[dict], seeds: tuple[int, ...]) -> list[Base2NewRow]:
    """One backbone's rows, one per method and shots (zero-shot rows first), with base and new accuracies
    by dataset and seed."""
    backbone = records[0]["backbone"]
    groups: dict[tuple[str, int], dict[str, dict[str, dict[int, float]]]] = defaultdict(
        lambda: {"base": defaultdict(dict), "new": defaultdict(dict)})
    for r in records:
        for key, base, new in (((r["zero_shot_method"], 0), "zero_shot_base_acc", "zero_shot_new_acc"),
                               ((r["method"], r["shots"]), "base_acc", "new_acc")):
            if r.get(base) is not None and r.get(new) is not None:
                groups[key]["base"][r["dataset_label"]][r["seed"]] = r[base]
                groups[key]["new"][r["dataset_label"]][r["seed"]] = r[new]
    drawn = drawn_by(records, lambda r: (r["method"], r["shots"], r["dataset_label"]))
    rows = []
    for method, shots in sorted(groups, key=lambda k: (k[1] > 0, method_sort_key(k[0]), k[1])):
        cells = {part: {d: Cell.for_row(v, shots, seeds, drawn.get((method, shots, d)) if shots else None)
                        for d, v in by_dataset.items()}
                 for part, by_dataset in groups[(method, shots)].items()}
        rows.append(Base2NewRow(backbone, method, shots, seeds if shots else (), cells["base"], cells["new"]))
    return rows


def base2new_section(records: list[dict], seeds_given: tuple[int, ...] | None, out: Path,
                     reference: bool) -> str:
    """The table of each backbone as Markdown (and the published averages with `reference`);
    out/base2new_table.csv gets every cell and average."""
    parts, csv_rows = [], []
    for backbone, mine in by_backbone(records):
        rows = base2new_rows(mine, expected_seeds(mine, seeds_given))
        if not rows:
            continue
        datasets = ordered_datasets(mine)
        header = ["Method", "Shots", "Classes"] + [DATASET_TITLES.get(d, d) for d in datasets] + ["Average"]
        body = []
        for row in rows:
            lines, row_csv = _row_lines(row, datasets)
            body += lines
            csv_rows += row_csv
        parts.append(f"## Base-to-novel generalization, top-1 accuracy (%), {backbone_title(backbone, mine)}\n\n"
                     "Trained on the base half of each dataset's classes; base and new test images are each "
                     "classified among their own half's classes. Mean ± sample std over seeds (n = seeds). HM = "
                     "2 x base x new / (base + new) of the means; the average's HM is the HM of the average base "
                     f"and the average new accuracy. {FLAG} marks a missing seed or a partial average."
                     + (f" {DRAWN_NOTE}" if any(c.drawn is not None for row in rows for c in row.base.values()) else "")
                     + "\n\n" + markdown_table(header, body))
    if reference:
        parts.append(published_base2new_section())
    write_csv(out / "base2new_table.csv", csv_rows)
    return "\n\n".join(parts)


def _row_lines(row: Base2NewRow, datasets: list[str]) -> tuple[list[list[str]], list[dict]]:
    """A row's three Markdown lines (base, new, HM) and its CSV rows: each dataset's, then the averages."""
    per_seed = bool(row.shots)
    by_part: dict[str, dict[str, Cell | HarmonicCell]] = {"base": {}, "new": {}, "HM": {}}
    for d in datasets:
        base, new = row.cells(d)
        by_part["base"][d], by_part["new"][d], by_part["HM"][d] = base, new, HarmonicCell(base, new)
    averages = {"base": row_average(row.base, datasets, per_seed),
                "new": row_average(row.new, datasets, per_seed),
                "HM": harmonic_average(row.base, row.new, datasets, per_seed)}
    lines = [[row.method, str(row.shots), part] + [cells[d].text() for d in datasets] + [averages[part].text()]
             for part, cells in by_part.items()]
    csv_rows = [{**row.columns(), "dataset": d, "classes": part, **cell_columns(by_part[part][d])}
                for d in datasets for part in by_part]
    csv_rows += [{**row.columns(), "dataset": "average", "classes": part, **average_columns(average)}
                 for part, average in averages.items()]
    return lines, csv_rows


def published_base2new_section() -> str:
    """The averages other methods' papers report, to set the table above against."""
    body = [[method, f"{base:.2f}", f"{new:.2f}", f"{hm:.2f}"]
            for method, (base, new, hm) in PUBLISHED_BASE2NEW.items()]
    return ("## Published base-to-novel averages (ViT-B/16, 16 shots, 11 datasets)\n\n"
            "As their authors report them; CLIP-LoRA's row is its run by CLIP-SVD's authors.\n\n"
            + markdown_table(["Method", "Base", "New", "HM"], body))
