"""Reading results files into records, and labelling them with the table row each one belongs to."""
from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import TypeVar

from qlora_clip.backbones.families import FAMILIES
from qlora_clip.data.settings import SPLIT_FILE_DIGEST
from qlora_clip.methods.table import METHODS, MODES, zero_shot_label
from qlora_clip.paper import DATASET_TITLES, DOMAIN_TARGETS, PAPER_DATASETS
from qlora_clip.run.results import IDENTITY_FIELDS, comparable_config, read_results
from qlora_clip.run.spec import dataset_tag

# Flags that place a record in a table cell rather than tell two methods apart.
# (root_path: where your own images are, which is the dataset of a --dataset folder run: label_datasets.)
CELL_FLAGS = set(IDENTITY_FIELDS) | {"root_path"}

# Flags whose effect the line records as it resolved, which run_settings reads instead: --compute_dtype
# auto is fp16 on a GPU and fp32 on the CPU, so the flag alone cannot tell two runs apart.
SETTING_FLAGS = {"compute_dtype"}

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


def label(records: list[dict], flag_defaults: dict) -> None:
    """Label every record with the cell it belongs to: its dataset's column, its method's row, its zero-shot row.

    What keeps two lines apart in the tables, duplicate check and plot, each decided once here:
      - the backbone and the protocol: tables of their own (by_backbone, protocol_of);
      - the dataset's identity, not its name: each --dataset folder is its own column (label_datasets);
      - the flags that change what a run computes (the template, the 4-bit base through the mode,
        --n_iters, ...): the method's row (label_methods);
      - where and in what precision it computed (run_settings: CUDA or CPU, fp16, bf16 or fp32): the
        row names them wherever a backbone's runs differ in them (label_methods, label_zero_shot);
      - the zero-shot base (4-bit or not), template and settings: the zero-shot row (label_zero_shot).
    Runs that differ only in the GPU model stay in one row; the efficiency and methods tables say
    where a row's time and memory come from several devices (device_names).
    """
    label_datasets(records)
    label_methods(records, flag_defaults)
    label_zero_shot(records)


def label_datasets(records: list[dict]) -> None:
    """Set record['dataset_label']: the dataset's column, one per dataset identity (spec.dataset_tag).

    A named dataset is its name ('dtd'). Every --dataset folder run records 'folder' as its dataset, so
    its identity is the folder it read (the resolved --root_path), named by the folder's name ('pets'),
    with the digest of its path where that name alone would be ambiguous: two folders of one name, or
    the name (or title) of a dataset of the paper ('pets (3fa2c1)' beside oxford_pets' 'Pets').
    """
    tags = [dataset_tag(r["dataset"], str(r.get("config", {}).get("root_path", ""))) for r in records]
    folders: dict[str, set[str]] = defaultdict(set)  # folder name -> the digests of the folders of that name
    for record, tag in zip(records, tags):
        if record["dataset"] == "folder":
            name, digest = _folder_name(tag)
            folders[name].add(digest)
    taken = {name.lower() for name in DATASET_TITLES} | {title.lower() for title in DATASET_TITLES.values()}
    taken |= {r["dataset"].lower() for r in records if r["dataset"] != "folder"}
    for record, tag in zip(records, tags):
        if record["dataset"] != "folder":
            record["dataset_label"] = record["dataset"]
            continue
        name, digest = _folder_name(tag)
        ambiguous = len(folders[name]) > 1 or name.lower() in taken
        record["dataset_label"] = f"{name} ({digest})" if ambiguous else name


def _folder_name(tag: str) -> tuple[str, str]:
    """('pets', '3fa2c1') of spec.dataset_tag's 'folder-pets-3fa2c1'."""
    name, digest = tag.removeprefix("folder-").rsplit("-", 1)
    return name, digest


def run_settings(record: dict) -> dict[str, str | None]:
    """Where and in what precision a run computed, which the flags do not say: the device kind ('cuda',
    'cpu', from `device`) and `compute_dtype` as resolved. A CUDA fp16 run and a CPU fp32 run of the same
    flags compute different numbers, in time and memory that do not compare. Lines without the fields
    (older ones) fall back to the flags (--compute_dtype), or None."""
    config = record.get("config", {})
    device = record.get("device")
    dtype = record.get("compute_dtype") or config.get("compute_dtype")
    return {"device": str(device).split(":")[0] if device else None,
            "compute_dtype": None if dtype in (None, "auto") else str(dtype)}


def _settings_text(settings: dict[str, str | None], varies: set[str]) -> list[str]:
    """The settings that vary among a backbone's runs, as a row label names them ('cpu', 'fp32'; a line
    that does not say: 'device ?', 'dtype ?')."""
    unknown = {"device": "device ?", "compute_dtype": "dtype ?"}
    return [settings[k] or unknown[k] for k in ("device", "compute_dtype") if k in varies]


def _varying_settings(records: list[dict]) -> dict[int, set[str]]:
    """By id(record): which run_settings vary among the runs of its backbone (its table)."""
    varying: dict[int, set[str]] = {}
    for _, mine in by_backbone(records):
        settings = [run_settings(r) for r in mine]
        varies = {k for k in ("device", "compute_dtype") if len({s[k] for s in settings}) > 1}
        varying.update({id(r): varies for r in mine})
    return varying


def device_names(runs: Iterable[dict]) -> list[str]:
    """The devices (`device_name`: the GPU's model, or 'cpu') `runs` ran on, by name."""
    return sorted({str(r["device_name"]) for r in runs if r.get("device_name")})


# Said after a time or memory of runs on different devices (two GPU models: one row, as their accuracies
# compare, but their times and memories less so).
DEVICES_NOTE = "(N devices): the runs of the row ran on N GPU models (device_names in the CSV)."


def devices_mark(names: list[str]) -> str:
    """What a time or memory of runs on the devices `names` (device_names) says after its value: DEVICES_NOTE."""
    return f" ({len(names)} devices)" if len(names) > 1 else ""


def label_methods(records: list[dict], flag_defaults: dict) -> None:
    """Set record['method']: the mode, plus its non-default flags where one mode ran with several configs,
    plus its run_settings where the backbone's runs differ in them.

    Smoke runs of 'qlora' with --n_iters 1 must not be averaged with the real ones: they become
    'qlora (n_iters=1)' while the runs with main.py's defaults stay 'qlora'; a CPU run beside GPU runs
    becomes 'qlora (cpu, fp32)' beside 'qlora (cuda, fp16)'. `flag_defaults`: main.py's
    (run_utils.flag_defaults), for lines written before a flag existed.
    """
    variants: dict[tuple, dict[str, dict]] = defaultdict(dict)
    keys = []
    varying = _varying_settings(records)
    for record in records:
        config = {k: v for k, v in comparable_config(record.get("config", {}), flag_defaults).items()
                  if k not in CELL_FLAGS | TABLE_FLAGS | SETTING_FLAGS}
        config = published_split(config, record)
        key = (record["backbone"], record["mode"])
        variants[key][repr(sorted(config.items()))] = config
        keys.append((key, config))
    for record, (key, config) in zip(records, keys):
        # A flag left to the method compares with that method's value (vera's lr is not lora's), for the run's
        # protocol (PromptSRC's epochs differ between few-shot and base-to-novel).
        defaults = comparable_config({"mode": record["mode"], "protocol": record.get("protocol", "fewshot")},
                                     flag_defaults)
        configs = list(variants[key].values())
        differing = sorted(k for k in config if len({repr(c.get(k)) for c in configs}) > 1
                           and config[k] != defaults.get(k))
        details = [f"{k}={config[k]}" for k in differing]
        details += _settings_text(run_settings(record), varying[id(record)])
        record["method"] = f"{record['mode']} ({', '.join(details)})" if details else record["mode"]


def published_split(config: dict, record: dict) -> dict:
    """A run on a published split (--split_file) is labelled by the split's format, not by its file and digest:
    each shot count and seed has a file of its own, and the seeds of one method average into one row beside the
    runs on our own draws ('lora (split_file=2sfs)' beside 'lora')."""
    if not (config.get(SPLIT_FILE_DIGEST) or record.get("split_file")):
        return config
    kept = {k: v for k, v in config.items() if k not in (SPLIT_FILE_DIGEST, "split_file")}
    kept["split_file"] = (record.get("split_file") or {}).get("format", "file")
    return kept


def latest_by_run(records: list[dict]) -> list[dict]:
    """One record per (backbone, method, dataset label, shots, seed), as label() set them: the last line
    wins, and repeats are reported."""
    latest: dict[tuple, dict] = {}
    for record in records:
        key = (record["backbone"], record["method"], record["dataset_label"], record["shots"], record["seed"])
        latest[key] = record
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
    """What changes a zero-shot accuracy besides the dataset: the 4-bit base, the prompt template, and
    run_settings (the backbone has a table of its own)."""
    method = METHODS.get(record["mode"])
    return {"quantized": record.get("quantized", bool(method and method.quantized)),
            "template": record.get("config", {}).get("template", "clip-lora"), **run_settings(record)}


def label_zero_shot(records: list[dict]) -> None:
    """Set record['zero_shot_method']: one zero-shot row per setting of zero_shot_settings.

    The label names the settings that differ between the backbone's runs, so runs with another
    template, device or dtype get their own row instead of overwriting each other's cells.
    """
    varying = _varying_settings(records)
    for _, mine in by_backbone(records):
        settings = [zero_shot_settings(r) for r in mine]
        templates = {s["template"] for s in settings}
        for record, setting in zip(mine, settings):
            details = []
            if len(templates) > 1 and setting["template"] != "clip-lora":
                details.append(f"template={setting['template']}")
            details += _settings_text(setting, varying[id(record)])
            record["zero_shot_method"] = zero_shot_label(setting["quantized"], details)


def ordered_datasets(records: list[dict]) -> list[str]:
    """The dataset labels of `records` (label_datasets), in the order the tables show them."""
    return in_paper_order({r["dataset_label"] for r in records})


def in_paper_order(names: set[str]) -> list[str]:
    """The paper's datasets in its order, then ImageNet's variants, then any others by name."""
    order = list(PAPER_DATASETS) + list(DOMAIN_TARGETS)
    return [d for d in order if d in names] + sorted(names - set(order))


def method_sort_key(method: str) -> tuple:
    """Methods in the methods table's order (lora, qlora, dora, qdora, then each method and its 4-bit
    entry), each mode's variants after it by name."""
    mode = method.split(" ")[0]
    return (MODES.index(mode) if mode in MODES else len(MODES), method)
