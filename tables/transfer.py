"""The cross-dataset transfer and domain generalization tables, from runs with --eval_datasets."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from qlora_clip.paper import DATASET_TITLES, DOMAIN_TARGETS, PAPER_DATASETS
from tables.cells import FLAG, Cell, row_average
from tables.output import csv_number, markdown_table, write_csv
from tables.records import method_sort_key

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
                                 "dataset": d, "mean": csv_number(cell.mean), "std": csv_number(cell.std), "n_seeds": cell.n,
                                 "missing_seeds": " ".join(map(str, cell.missing)),
                                 "complete": bool(cell.n) and not cell.missing})
            csv_rows.append({"backbone": backbone, "method": row.method, "shots": row.shots, "source": row.source,
                             "dataset": "average", "mean": csv_number(average.mean), "std": csv_number(average.std),
                             "n_seeds": average.n, "missing_seeds": "; ".join(average.problems),
                             "complete": not average.problems})
        parts.append(f"## {title}, top-1 accuracy (%), {backbone}\n\n"
                     "One adapter per row, trained on the source dataset and evaluated on each target's full test "
                     "set with the target's own class names. Mean ± sample std over seeds (n = seeds); the average "
                     f"is over the targets shown. {FLAG} marks a missing seed or a partial average.\n\n"
                     + markdown_table(header, body))
    write_csv(out / f"{table}_table.csv", csv_rows)
    return "\n\n".join(parts)
