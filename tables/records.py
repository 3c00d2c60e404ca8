"""Reading results files into records, and labelling them with the table row each one belongs to."""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from qlora_clip.methods import METHODS, MODES, zero_shot_label
from qlora_clip.paper import PAPER_DATASETS
from qlora_clip.results import IDENTITY_FIELDS, comparable_config, read_results

# Flags that place a record in a table cell rather than tell two methods apart.
CELL_FLAGS = set(IDENTITY_FIELDS)

# Flags that choose the table a record goes to, or add columns to it, rather than tell two methods
# apart: a base-to-novel 'lora' run is still 'lora', in its own table.
TABLE_FLAGS = {"protocol", "eval_datasets"}


class SummaryError(Exception):
    """Nothing to summarize: the message names the file at fault."""


def load(paths: list[str]) -> list[dict]:
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


def label_methods(records: list[dict]) -> None:
    """Set record['method']: the mode, plus its non-default flags where one mode ran with several configs.

    Smoke runs of 'qlora' with --n_iters 1 must not be averaged with the real ones: they become
    'qlora (n_iters=1)' while the runs with main.py's defaults stay 'qlora'.
    """
    defaults = comparable_config({})
    variants: dict[tuple, dict[str, dict]] = defaultdict(dict)
    keys = []
    for record in records:
        config = {k: v for k, v in comparable_config(record.get("config", {})).items()
                  if k not in CELL_FLAGS | TABLE_FLAGS}
        key = (record["backbone"], record["mode"])
        variants[key][repr(sorted(config.items()))] = config
        keys.append((key, config))
    for record, (key, config) in zip(records, keys):
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
    by_backbone: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_backbone[record["backbone"]].append(record)
    for mine in by_backbone.values():
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
    names = {r["dataset"] for r in records}
    return [d for d in PAPER_DATASETS if d in names] + sorted(names - set(PAPER_DATASETS))


def method_sort_key(method: str) -> tuple:
    mode = method.split(" ")[0]
    return (MODES.index(mode) if mode in MODES else len(MODES), method)
