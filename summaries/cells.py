"""Table cells: the accuracies of one method on one dataset by seed, a row's average, and the row itself."""
from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass

from qlora_clip.evaluation.metrics import harmonic_mean
from qlora_clip.paper import DATASET_TITLES

FLAG = "⚠"


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

    @classmethod
    def for_row(cls, by_seed: dict[int, float], shots: int, seeds: tuple[int, ...]) -> Cell:
        """A cell of a row with `shots`; a zero-shot row (0 shots) expects just the seeds it has, since a
        frozen model scored on the full test set gets the same accuracy whatever the seed."""
        return cls(by_seed, seeds if shots else tuple(by_seed))

    def text(self) -> str:
        if not self.by_seed:
            return "—"
        return _flagged(f"{_mean_std(self.mean, self.std)} (n={self.n})", self.missing)


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
        return _mean_std(self.mean, self.std) + (f" (n={self.n})" if self.n else "")


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

    @functools.cached_property
    def per_seed(self) -> Cell:
        """Each seed's HM: where the spread, the seed count and the missing seeds come from."""
        seeds = sorted(set(self.base.by_seed) & set(self.new.by_seed))
        return Cell({s: harmonic_mean(self.base.by_seed[s], self.new.by_seed[s]) for s in seeds}, self.base.expected)

    @property
    def std(self) -> float | None:
        return self.per_seed.std

    @property
    def n(self) -> int:
        return self.per_seed.n

    @property
    def missing(self) -> list[int]:
        return self.per_seed.missing

    def text(self) -> str:
        if self.mean is None:
            return "—"
        # The seeds either part lacks of its own expected ones (a zero-shot part expects only its own).
        missing = sorted(set(self.base.missing) | set(self.new.missing))
        return _flagged(f"{_mean_std(self.mean, self.std)} (n={self.n})", missing)


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
class Row:
    """What every table's row has: one method at one number of shots (0: zero-shot) on one backbone,
    and the seeds each of its cells should have."""
    backbone: str
    method: str
    shots: int
    expected: tuple[int, ...]

    def empty_cell(self) -> Cell:
        """The cell of a dataset the row has no run for."""
        return Cell({}, self.expected)

    def columns(self) -> dict:
        """The CSV columns that say which row a CSV line belongs to."""
        return {"backbone": self.backbone, "method": self.method, "shots": self.shots}


def _mean_std(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _flagged(value: str, missing: list[int]) -> str:
    return f"{FLAG} {value} no seed {','.join(map(str, missing))}" if missing else value
