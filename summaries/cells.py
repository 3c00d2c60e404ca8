"""Table cells: the accuracies of one method on one dataset by seed, a row's average, and the row itself."""
from __future__ import annotations

import functools
import statistics
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from qlora_clip.evaluation.metrics import harmonic_mean
from qlora_clip.paper import DATASET_TITLES

FLAG = "⚠"
# A cell whose runs drew fewer distinct images for a class than their shots (`shots_drawn`): its row's
# shot count overstates what it trained on.
DRAWN_NOTE = ("*N distinct: trained on fewer distinct images than the shots (a class had fewer training images, "
              "and the draw repeated some); N is the fewest distinct images drawn for a class (`shots_drawn`).")


@dataclass
class Cell:
    """Accuracies of one (method, shots, dataset) by seed, and the seeds a complete cell has."""
    by_seed: dict[int, float]
    expected: tuple[int, ...]
    drawn: int | None = None  # fewest_drawn of its runs: None when every run drew its shots

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
    def for_row(cls, by_seed: dict[int, float], shots: int, seeds: tuple[int, ...], drawn: int | None = None) -> Cell:
        """A cell of a row with `shots`; a zero-shot row (0 shots) expects just the seeds it has, since a
        frozen model scored on the full test set gets the same accuracy whatever the seed."""
        return cls(by_seed, seeds if shots else tuple(by_seed), drawn)

    def text(self) -> str:
        if not self.by_seed:
            return "—"
        return _flagged(f"{_mean_std(self.mean, self.std)} (n={self.n})", self.missing) + drawn_mark(self.drawn)


@dataclass
class Average:
    """The across-datasets average of one table row."""
    mean: float | None
    std: float | None
    n: int
    problems: list[str]  # empty when every dataset has every expected seed
    drawn: int | None = None  # the fewest of its cells' `drawn`

    def text(self) -> str:
        if self.mean is None:
            return "—"
        if self.problems:
            return f"{FLAG} {self.mean:.2f} partial: {'; '.join(self.problems)}" + drawn_mark(self.drawn)
        return _mean_std(self.mean, self.std) + (f" (n={self.n})" if self.n else "") + drawn_mark(self.drawn)


def row_average(cells: dict[str, Cell], datasets: list[str], per_seed: bool = True) -> Average:
    """Mean ± std over seeds of the per-seed average over datasets, when the row is complete.

    A row that lacks a dataset or a seed gets the mean of the dataset means it has, marked partial,
    so a hole in the sweep can never pass for a finished average. Without `per_seed` (zero-shot
    rows, whose value does not depend on the seed) the average is the mean of the dataset means.
    """
    present = [d for d in datasets if d in cells and cells[d].n]
    if not present:
        return Average(None, None, 0, ["no runs"])
    drawn = fewest(cells[d].drawn for d in present)
    problems = []
    absent = [d for d in datasets if d not in present]
    if absent:
        problems.append(f"{len(present)}/{len(datasets)} datasets")
    short = [d for d in present if cells[d].missing]
    if short:
        problems.append("seeds missing in " + ", ".join(DATASET_TITLES.get(d, d) for d in short))
    if problems or not per_seed:
        return Average(statistics.fmean(cells[d].mean for d in present), None, 0, problems, drawn)
    seeds = cells[present[0]].expected
    per_seed = [statistics.fmean(cells[d].by_seed[s] for d in present) for s in seeds]
    std = statistics.stdev(per_seed) if len(per_seed) >= 2 else None
    return Average(statistics.fmean(per_seed), std, len(per_seed), [], drawn)


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

    @property
    def drawn(self) -> int | None:
        return fewest((self.base.drawn, self.new.drawn))

    def text(self) -> str:
        if self.mean is None:
            return "—"
        # The seeds either part lacks of its own expected ones (a zero-shot part expects only its own).
        missing = sorted(set(self.base.missing) | set(self.new.missing))
        return _flagged(f"{_mean_std(self.mean, self.std)} (n={self.n})", missing) + drawn_mark(self.drawn)


def harmonic_average(base: dict[str, Cell], new: dict[str, Cell], datasets: list[str], per_seed: bool) -> Average:
    """HM(average base, average new); its std is over seeds of HM(that seed's averages), when complete."""
    base_avg, new_avg = row_average(base, datasets, per_seed), row_average(new, datasets, per_seed)
    if base_avg.mean is None or new_avg.mean is None:
        return Average(None, None, 0, ["no runs"])
    problems = list(dict.fromkeys(base_avg.problems + new_avg.problems))
    mean = harmonic_mean(base_avg.mean, new_avg.mean)
    drawn = fewest((base_avg.drawn, new_avg.drawn))
    if problems or not per_seed:
        return Average(mean, None, 0, problems, drawn)
    seeds = base[datasets[0]].expected
    per_seed_hm = [harmonic_mean(statistics.fmean(base[d].by_seed[s] for d in datasets),
                                 statistics.fmean(new[d].by_seed[s] for d in datasets)) for s in seeds]
    return Average(mean, statistics.stdev(per_seed_hm) if len(per_seed_hm) >= 2 else None, len(per_seed_hm), [],
                   drawn)


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


def fewest_drawn(runs: Iterable[dict]) -> int | None:
    """The fewest distinct train images any of `runs` drew for a class, where that was fewer than its shots
    (a class had fewer images than --shots, and the draw repeated some); None when every run drew its
    shots. Lines written before `shots_drawn` existed count as having drawn their shots."""
    return fewest(r.get("shots_drawn") for r in runs
                  if _whole(r.get("shots_drawn")) and r["shots_drawn"] < r["shots"])


def drawn_by(records: Iterable[dict], key: Callable[[dict], Hashable]) -> dict[Hashable, int]:
    """fewest_drawn of the records of each key, for the keys that have one."""
    groups: dict[Hashable, list[dict]] = defaultdict(list)
    for r in records:
        groups[key(r)].append(r)
    drawn = {k: fewest_drawn(runs) for k, runs in groups.items()}
    return {k: v for k, v in drawn.items() if v is not None}


def fewest(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def drawn_mark(drawn: int | None) -> str:
    """What a cell says after its value when its runs drew fewer distinct images than its shots (DRAWN_NOTE)."""
    return f" *{drawn} distinct" if drawn is not None else ""


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _mean_std(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _flagged(value: str, missing: list[int]) -> str:
    return f"{FLAG} {value} no seed {','.join(map(str, missing))}" if missing else value
