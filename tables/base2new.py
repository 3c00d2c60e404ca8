"""The base-to-novel table: base, new and HM accuracy per dataset, and the published averages."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from qlora_clip.paper import DATASET_TITLES, PUBLISHED_BASE2NEW
from tables.cells import FLAG, Cell, HarmonicCell, harmonic_average, row_average
from tables.output import csv_number, markdown_table, write_csv
from tables.records import method_sort_key, ordered_datasets


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
                                     "classes": part, "mean": csv_number(mean), "std": csv_number(cell.std), "n_seeds": cell.n,
                                     "missing_seeds": " ".join(map(str, cell.missing)),
                                     "complete": bool(cell.n) and not cell.missing})
            for part, average in averages.items():
                csv_rows.append({"backbone": backbone, "method": row.method, "shots": row.shots, "dataset": "average",
                                 "classes": part, "mean": csv_number(average.mean), "std": csv_number(average.std),
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
