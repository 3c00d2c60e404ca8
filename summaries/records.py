"""Reading results files into records, and labelling them with the table row each one belongs to."""
from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import TypeVar

from qlora_clip.backbones.families import FAMILIES
from qlora_clip.methods.table import METHODS, MODES, zero_shot_label
from qlora_clip.paper import DOMAIN_TARGETS, PAPER_DATASETS
from qlora_clip.run.results import IDENTITY_FIELDS, comparable_config, read_results

# Flags that place a record in a table cell rather than tell two methods apart.
# (root_path: where your own images are, which is the dataset of a --dataset folder run.)
CELL_FLAGS = set(IDENTITY_FIELDS) | {"root_path"}

# Flags that choose the table a record goes to, or add columns to it, rather than tell two methods
# apart: a base-to-novel 'lora' run is still 'lora', in its own table.
TABLE_FLAGS = {"protocol", "eval_datasets"}

T = TypeVar("T")


class SummaryError(Exception):
    """Nothing to summarize: the message names the file at fault."""


def load(paths: list[str]) -> list[dict]:
    """The records of every file, in order; unreadable lines are reported on stderr and left out."""
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


def label_methods(records: list[dict], flag_defaults: dict) -> None:
    """Set record['method']: the mode, plus its non-default flags where one mode ran with several configs.

    Smoke runs of 'qlora' with --n_iters 1 must not be averaged with the real ones: they become
    'qlora (n_iters=1)' while the runs with main.py's defaults stay 'qlora'. `flag_defaults`: main.py's
    (run_utils.flag_defaults), for lines written before a flag existed.
    """
    variants: dict[tuple, dict[str, dict]] = defaultdict(dict)
    keys = []
    for record in records:
        config = {k: v for k, v in comparable_config(record.get("config", {}), flag_defaults).items()
                  if k not in CELL_FLAGS | TABLE_FLAGS}
        key = (record["backbone"], record["mode"])
        variants[key][repr(sorted(config.items()))] = config
        keys.append((key, config))
    for record, (key, config) in zip(records, keys):
        # A flag left to the method compares with that method's value (vera's lr is not lora's).
        defaults = comparable_config({"mode": record["mode"]}, flag_defaults)
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


def by_backbone(items: Iterable[T], backbone_of: Callable[[T], str] = itemgetter("backbone")
                ) -> Iterator[tuple[str, list[T]]]:
    """(backbone, its items) in name order: each backbone gets a table of its own.

    `items` are records, or rows with `backbone_of=attrgetter("backbone")`."""
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        groups[backbone_of(item)].append(item)
    for backbone in sorted(groups):
        yield backbone, groups[backbone]


def backbone_title(backbone: str, records: list[dict]) -> str:
    """A table's backbone as its heading names it: 'SigLIP-B/16 (SigLIP)', with the family the runs recorded
    (lines written before families existed record none, and name the backbone alone)."""
    recorded = {record.get("family") for record in records}
    if len(recorded) == 1 and (family := recorded.pop()) in FAMILIES:
        return f"{backbone} ({FAMILIES[family].label})"
    return backbone


def expected_seeds(records: list[dict], given: tuple[int, ...] | None) -> tuple[int, ...]:
    """The seeds a trained cell should have: --seeds, else every seed the records ran with."""
    return given or tuple(sorted({r["seed"] for r in records}))


def protocol_of(record: dict) -> str:
    return record.get("protocol", "fewshot")  # lines written before --protocol existed are few-shot runs


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
    for _, mine in by_backbone(records):
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
    """The datasets of `records`, in the order the tables show them."""
    return in_paper_order({r["dataset"] for r in records})


def in_paper_order(names: set[str]) -> list[str]:
    """The paper's datasets in its order, then ImageNet's variants, then any others by name."""
    order = list(PAPER_DATASETS) + list(DOMAIN_TARGETS)
    return [d for d in order if d in names] + sorted(names - set(order))


def method_sort_key(method: str) -> tuple:
    """Methods in the methods table's order (lora, qlora, dora, qdora, then each method and its 4-bit
    entry), each mode's variants after it by name."""
    mode = method.split(" ")[0]
    return (MODES.index(mode) if mode in MODES else len(MODES), method)
