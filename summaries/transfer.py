"""The cross-dataset transfer and domain generalization tables, from runs with --eval_datasets.

Beside each target's accuracy, its change from zero-shot (forgetting, when negative): each run's
test accuracy on the target minus its own zero-shot accuracy there, in points, with the mean over
the targets shown (per seed, then mean ± std over seeds, as the averages).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from qlora_clip.paper import DATASET_TITLES, DOMAIN_TARGETS
from summaries.cells import DRAWN_NOTE, FLAG, Average, Cell, Row, drawn_by, row_average
from summaries.output import average_columns, cell_columns, csv_number, markdown_table, write_csv
from summaries.records import backbone_title, by_backbone, expected_seeds, in_paper_order, method_sort_key

TRANSFER_TABLES = {
    # table: (title, which --eval_datasets targets it shows)
    "cross_dataset": ("Cross-dataset transfer", lambda name: name not in DOMAIN_TARGETS),
    "domain_generalization": ("Domain generalization", lambda name: name in DOMAIN_TARGETS),
}


@dataclass
class TransferRow(Row):
    source: str
    source_cell: Cell
    targets: dict[str, Cell]
    changes: dict[str, Cell] = field(default_factory=dict)  # per target: test - zero-shot accuracy (trained rows)


def transfer_rows(records: list[dict], shows: Callable[[str], bool], seeds: tuple[int, ...]) -> list[TransferRow]:
    """One backbone's rows, one per (method, source dataset, shots), zero-shot rows first; cells by
    target and seed, for the targets `shows` keeps."""
    backbone = records[0]["backbone"]
    groups: dict[tuple[str, str, int], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    changes: dict[tuple[str, str, int], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        targets = {name: accs for name, accs in r["eval_datasets"].items() if shows(name)}
        if not targets:
            continue
        for key, name_of_acc in (((r["zero_shot_method"], r["dataset_label"], 0), "zero_shot_acc"),
                                 ((r["method"], r["dataset_label"], r["shots"]), "test_acc")):
            if r.get(name_of_acc) is not None:
                groups[key][r["dataset_label"]][r["seed"]] = r[name_of_acc]
            for name, accs in targets.items():
                if accs.get(name_of_acc) is not None:
                    groups[key][name][r["seed"]] = accs[name_of_acc]
        for name, accs in targets.items():
            if accs.get("test_acc") is not None and accs.get("zero_shot_acc") is not None:
                changes[(r["method"], r["dataset_label"], r["shots"])][name][r["seed"]] = (accs["test_acc"]
                                                                                           - accs["zero_shot_acc"])
    # An adapter trained on a draw that repeated images: every cell of its row (source and targets) says so.
    drawn = drawn_by(records, lambda r: (r["method"], r["dataset_label"], r["shots"]))
    rows = []
    for method, source, shots in sorted(groups, key=lambda k: (k[2] > 0, method_sort_key(k[0]), k[1], k[2])):
        row_drawn = drawn.get((method, source, shots)) if shots else None
        cells = {d: Cell.for_row(v, shots, seeds, row_drawn) for d, v in groups[(method, source, shots)].items()}
        source_cell = cells.pop(source, Cell({}, seeds))
        change = {d: Cell.for_row(v, shots, seeds, row_drawn) for d, v in changes[(method, source, shots)].items()}
        rows.append(TransferRow(backbone, method, shots, seeds if shots else (), source, source_cell, cells,
                                change if shots else {}))
    return rows


def transfer_section(table: str, records: list[dict], seeds_given: tuple[int, ...] | None, out: Path) -> str:
    """The table of each backbone as Markdown, and out/<table>_table.csv; '' (no file) without rows."""
    title, shows = TRANSFER_TABLES[table]
    parts, csv_rows = [], []
    for backbone, mine in by_backbone(records):
        rows = transfer_rows(mine, shows, expected_seeds(mine, seeds_given))
        if not rows:
            continue
        targets = in_paper_order({d for row in rows for d in row.targets})
        header = (["Method", "Shots", "Source", "Source accuracy"] + [DATASET_TITLES.get(d, d) for d in targets]
                  + ["Average over targets"] + [f"Δ {DATASET_TITLES.get(d, d)}" for d in targets]
                  + ["Mean Δ (forgetting)"])
        body = []
        for row in rows:
            line, row_csv = _row_lines(row, targets)
            body.append(line)
            csv_rows += row_csv
        parts.append(f"## {title}, top-1 accuracy (%), {backbone_title(backbone, mine)}\n\n"
                     "One adapter per row, trained on the source dataset and evaluated on each target's full test "
                     "set with the target's own class names. Mean ± sample std over seeds (n = seeds); the average "
                     f"is over the targets shown. Δ: the change from zero-shot on each target (each run's test "
                     "accuracy there minus its own zero-shot accuracy, in points; negative: forgotten), and its mean "
                     f"over the targets. {FLAG} marks a missing seed or a partial average."
                     + (f" {DRAWN_NOTE}" if any(row.source_cell.drawn is not None for row in rows) else "")
                     + "\n\n" + markdown_table(header, body))
    if not parts:
        return ""
    write_csv(out / f"{table}_table.csv", csv_rows)
    return "\n\n".join(parts)


def _row_lines(row: TransferRow, targets: list[str]) -> tuple[list[str], list[dict]]:
    """A row's Markdown line and its CSV rows: the source's, each target's it has, then the average."""
    expected = [d for d in targets if d != row.source]
    average = row_average(row.targets, expected, per_seed=bool(row.shots))
    change = row_average(row.changes, expected) if row.changes else None
    line = ([row.method, str(row.shots), DATASET_TITLES.get(row.source, row.source), row.source_cell.text()]
            + [row.targets[d].text() if d in row.targets else ("(source)" if d == row.source else "—")
               for d in targets] + [average.text()]
            + [row.changes[d].text() if d in row.changes else "—" for d in targets]
            + [change.text() if change is not None else "—"])
    shown = [(row.source, row.source_cell)] + [(d, row.targets[d]) for d in expected if d in row.targets]
    head = {**row.columns(), "source": row.source}
    csv_rows = [{**head, "dataset": d, **cell_columns(cell), **_change_columns(row.changes.get(d))}
                for d, cell in shown]
    csv_rows.append({**head, "dataset": "average", **average_columns(average),
                     **_change_columns(change)})
    return line, csv_rows


def _change_columns(change: Cell | Average | None) -> dict:
    """The CSV columns of a change from zero-shot: its mean and std over seeds ('' where there is none)."""
    if change is None:
        return {"change_from_zero_shot_mean": "", "change_from_zero_shot_std": ""}
    return {"change_from_zero_shot_mean": csv_number(change.mean), "change_from_zero_shot_std": csv_number(change.std)}
