"""The output flags of a run (OutputConfig), and every flag of a run: the settings classes that declare them.

Each part of the library declares its own flags (data/settings.py, methods/settings.py, ...); this
module gathers them for the command line (run_utils.build_parser), the defaults and the roles that
a run's identity is derived from (qlora_clip/flags.py says what a role is).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qlora_clip.backbones.settings import ModelConfig
from qlora_clip.data.settings import DataConfig
from qlora_clip.evaluation.settings import EvalConfig
from qlora_clip.flags import BOOKKEEPING, RUN, defaults, flag, roles, unkeyed_defaults
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.run.tracking import TrackingConfig
from qlora_clip.training.settings import ComputeConfig, TrainConfig


def optional_path(value: str) -> Path | None:
    """A path flag's value as a Path; '' (given as an empty string) as None."""
    return Path(value) if value else None


@dataclass(frozen=True)
class OutputConfig:
    save_path: Path | None = flag(None, "save the adapter under SAVE_PATH/<backbone>/<dataset>/<K>shots/seed<S>/<mode>",
                                  group="outputs", role=BOOKKEEPING, type=str, convert=optional_path)
    checkpoint_every: int = flag(0, "save the full training state every N optimizer steps (0 = never)",
                                 group="outputs", role=BOOKKEEPING)
    checkpoint_dir: Path = flag("checkpoints", "training states go to "
                                "CHECKPOINT_DIR/<backbone>/<dataset>/<K>shots/seed<S>/<mode>", group="outputs",
                                role=BOOKKEEPING, convert=Path)
    resume: bool = flag(False, "continue from the last training state in --checkpoint_dir (start at 0 if none)",
                        group="outputs", role=BOOKKEEPING)
    merge_export: Path | None = flag(None, "write a plain checkpoint of the family's own class (CLIPModel, "
                                     "SiglipModel, MetaClip2Model) with the adapter merged in (4-bit bases: into the "
                                     "dequantized weights) to this new or empty folder; every method PEFT can merge",
                                     group="outputs", role=BOOKKEEPING, type=str, metavar="DIR", convert=optional_path)
    overwrite_export: bool = flag(False, "let --merge_export replace the model folder (one with config.json) already "
                                  "there", group="outputs", role=BOOKKEEPING)
    results_file: Path = flag("results/results.jsonl", "JSON-lines file that gets one line per run", group="outputs",
                              role=BOOKKEEPING, convert=Path)


# Every settings class whose fields are main.py's flags, in --help's order within a section.
SETTINGS = (DataConfig, EvalConfig, ModelConfig, AdapterConfig, TrainConfig, ComputeConfig, OutputConfig,
            TrackingConfig)
ROLES = roles(SETTINGS)
# Flags that say where things are read or written, or how the work is spread, but not what a run computes: two
# runs differing only in these are the same run (sweeps skip it, --resume accepts it). --protocol and
# --eval_datasets are not among them: the first changes what is trained and tested, and a line with
# --eval_datasets holds accuracies that a line without them lacks.
BOOKKEEPING_FLAGS = frozenset(name for name, role in ROLES.items() if role == BOOKKEEPING)
# Flags that change what a run evaluates or how it computes, not the adapter it trains (flags.RUN): an adapter
# trained without --eval_datasets is the one a later --eval_only --eval_datasets ... evaluates.
NOT_IN_ADAPTER = frozenset(name for name, role in ROLES.items() if role == RUN)
# Flags that are part of an identity only away from their default (flags.flag's keyed_at_default=False): runs
# recorded before they existed, and runs that leave them alone, keep their keys.
UNKEYED_DEFAULTS = unkeyed_defaults(SETTINGS)


def flag_defaults() -> dict:
    """Every flag's default, from the settings' declarations: what a results line that predates a flag is read
    with (results.comparable_config)."""
    return defaults(SETTINGS)
