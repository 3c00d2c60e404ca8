"""What the tables are written as: Markdown for stdout, CSV files for --out."""
from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path

from summaries.cells import Average, Cell, HarmonicCell


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" :--- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def csv_number(value: float | None) -> str:
    """A number as the CSV files keep it: up to 4 decimals, no trailing zeros; '' for none."""
    return "" if value is None else f"{value:.4f}".rstrip("0").rstrip(".")


def cell_columns(cell: Cell | HarmonicCell, list_seeds: bool = False) -> dict:
    """The CSV columns of a cell: mean, std, seed count, missing seeds, and whether it is complete.

    `list_seeds` adds the seeds the cell has (the paper table's CSV lists them)."""
    seeds = " ".join(map(str, sorted(cell.by_seed))) if list_seeds else None
    return _stat_columns(cell.mean, cell.std, cell.n, seeds, " ".join(map(str, cell.missing)),
                         bool(cell.n) and not cell.missing, cell.drawn)


def average_columns(average: Average, list_seeds: bool = False) -> dict:
    """The same columns for a row's average, whose 'missing seeds' are what makes it partial."""
    return _stat_columns(average.mean, average.std, average.n, "" if list_seeds else None,
                         "; ".join(average.problems), not average.problems, average.drawn)


def _stat_columns(mean: float | None, std: float | None, n: int, seeds: str | None, missing: str,
                  complete: bool, drawn: int | None) -> dict:
    columns = {"mean": csv_number(mean), "std": csv_number(std), "n_seeds": n}
    if seeds is not None:
        columns["seeds"] = seeds
    # shots_drawn: '' when every run drew its shots, else the fewest distinct images drawn for a class.
    return {**columns, "missing_seeds": missing, "complete": complete, "shots_drawn": "" if drawn is None else drawn}


@contextlib.contextmanager
def replaced_when_written(path: Path, tmp_suffix: str) -> Iterator[Path]:
    """A file beside `path` to write; it takes `path`'s place only once complete, so a reader of
    --out never sees half a file. `tmp_suffix` keeps the ending a writer may need (matplotlib: .png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(tmp_suffix)
    yield tmp
    tmp.replace(path)


def write_csv(path: Path, rows: list[dict]) -> None:
    with replaced_when_written(path, ".csv.tmp") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)
