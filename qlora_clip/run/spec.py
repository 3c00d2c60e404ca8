"""A run as one value: its identity, its typed settings, and every name and path derived from them.

`RunSpec.from_flags` is the one place that turns main.py's flag values into typed settings
(each part's settings module; flags.py). Everything a run names or writes is a property of its spec, so the run, the sweep
that plans it, `--resume`, `--eval_only` and the tracking backends all spell it the same way:

    name             qlora-dtd-4shot-seed1, qlora-dtd-base2new-16shot-seed1   (tracking, sweep labels)
    subdir           ViT-B-16/dtd/4shots/seed1/qlora          (adapters, training states, sweep logs)
                     ViT-B-16/dtd/base2new/16shots/seed1/lora-r4-lr0.001-5c0e1f   (other settings)
    subset_path      <results folder>/subsets/dtd_4shots_seed1.json               (the few-shot draw)
    predictions_path <results folder>/predictions/<subdir>.safetensors            (--save_predictions)
    key              a digest of `identity`: equal exactly when two runs compute the same thing

`identity` is results.comparable_config of the flags: what the run computes, with bookkeeping
(where data and outputs live, how work is spread) left out. Two settings that train different
adapters never share a folder: the method's folder carries the flags that differ from the
defaults, readably, and a digest of them. A `--dataset folder` run is told apart by where its
images are (`folder-<name>-<digest of the resolved path>`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from qlora_clip.backbones.settings import ModelConfig
from qlora_clip.data.settings import SPLIT_FILE_DIGEST, DataConfig
from qlora_clip.evaluation.settings import EvalConfig
from qlora_clip.flags import build
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.methods.table import resolve_flags
from qlora_clip.run.results import comparable_config
from qlora_clip.run.settings import NOT_IN_ADAPTER, OutputConfig, flag_defaults
from qlora_clip.run.tracking import TrackingConfig
from qlora_clip.training.settings import ComputeConfig, TrainConfig

if TYPE_CHECKING:
    from qlora_clip.backbones.loading import Checkpoint

# The flags of a run's identity that its paths spell out in their own folder levels (root_path:
# for --dataset folder, in the dataset's).
PATH_FLAGS = ("backbone", "dataset", "root_path", "protocol", "shots", "seed", "mode")
# A method folder's readable part stops here; the digest after it keeps folders apart regardless.
MAX_VARIANT_TEXT = 48


def backbone_tag(backbone: str) -> str:
    """A folder-safe name for a backbone: 'ViT-B/16' -> 'ViT-B-16', a local path -> its folder name."""
    if os.path.isdir(os.path.expanduser(backbone)):
        backbone = Path(backbone).expanduser().resolve().name
    return _folder_safe(backbone)


def dataset_tag(dataset: str, root_path: str) -> str:
    """'dtd'; for your own images, 'folder-<folder name>-<digest of its resolved path>'."""
    if dataset != "folder":
        return dataset
    resolved = str(Path(root_path).expanduser().resolve())
    return f"folder-{_folder_safe(Path(resolved).name) or 'root'}-{_digest(resolved, 6)}"


def _folder_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def _digest(value: Any, length: int) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class RunSpec:
    """One run of main.py: who it is, how it is set up, where it writes."""
    flags: Mapping[str, Any]     # every flag's value, as the results line records it ("config")
    defaults: Mapping[str, Any]  # every flag's default, to tell what a run changed
    data: DataConfig
    model: ModelConfig
    adapter: AdapterConfig
    train: TrainConfig
    compute: ComputeConfig
    evaluation: EvalConfig
    outputs: OutputConfig
    tracking_flags: TrackingConfig = field(repr=False)

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> RunSpec:
        """The spec of a run with these flag values (vars() of main.py's parsed arguments, or a results line's
        config); a flag missing from them takes its default, and one left to the method (None) the method's."""
        defaults = dict(flag_defaults() if defaults is None else defaults)
        f = resolve_flags({**defaults, **flags})
        return cls(flags=f, defaults=defaults, data=build(DataConfig, f), model=build(ModelConfig, f),
                   adapter=build(AdapterConfig, f, total_steps=f["n_iters"] * f["shots"]),
                   train=build(TrainConfig, f, shots=f["shots"], seed=f["seed"]), compute=build(ComputeConfig, f),
                   evaluation=build(EvalConfig, f), outputs=build(OutputConfig, f),
                   tracking_flags=build(TrackingConfig, f, resume=f["resume"]))

    @property
    def tracking(self) -> TrackingConfig:
        """--report_to and its folder; the run is called --run_name, or `name`."""
        given = self.tracking_flags
        return TrackingConfig(report_to=given.report_to, run_name=given.run_name or self.name,
                              run_group=given.run_group, logging_dir=given.logging_dir, resume=given.resume)

    @cached_property
    def checkpoint(self) -> Checkpoint:
        """The --backbone's checkpoint, resolved once for the run: where it is, and its family (config.json)."""
        from qlora_clip.backbones.loading import open_checkpoint

        return open_checkpoint(self.backbone)

    # --- identity -------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.adapter.mode

    @property
    def backbone(self) -> str:
        return self.model.backbone

    @property
    def dataset(self) -> str:
        return self.data.dataset

    @property
    def protocol(self) -> str:
        return self.data.protocol

    @property
    def shots(self) -> int:
        return self.data.shots

    @property
    def seed(self) -> int:
        return self.data.seed

    @property
    def identity(self) -> dict:
        """What the run computes (results.comparable_config): equal for two runs exactly when they are one run."""
        return comparable_config(self.flags, self.defaults)

    @property
    def trained_identity(self) -> dict:
        """What decides the adapter the run trains: `identity` without the evaluation-only flags
        (NOT_IN_ADAPTER); a training state or saved adapter belongs to a run with the same one."""
        return {k: v for k, v in self.identity.items() if k not in NOT_IN_ADAPTER}

    def trained_identity_of(self, config: Mapping[str, Any]) -> dict:
        """The trained identity of a recorded config (a saved adapter's run, a training state), flags it predates
        at their defaults: what compares with this run's `trained_identity`."""
        return RunSpec.from_flags(dict(config), self.defaults).trained_identity

    @property
    def key(self) -> str:
        """A short digest of `identity`."""
        return _digest(self.identity, 12)

    # --- names ----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """'qlora-dtd-4shot-seed1' ('...-base2new-16shot-...' under that protocol): tracking's default run name."""
        protocol = f"-{self.protocol}" if self.protocol != "fewshot" else ""
        return f"{self.method}-{self.dataset}{protocol}-{self.shots}shot-seed{self.seed}"

    def changed_flags(self) -> dict:
        """The flags that decide the trained adapter and differ from their defaults (besides the path's own);
        a flag left to the method compares with the method's value for the run's protocol."""
        defaults = comparable_config({"mode": self.method, "protocol": self.protocol}, self.defaults)
        return {k: v for k, v in self.trained_identity.items() if k not in PATH_FLAGS and v != defaults.get(k)}

    @property
    def variant(self) -> str:
        """The method's folder: 'qlora' at the defaults, else 'qlora-r4-lr0.001-<digest>' (the digest
        covers every changed flag, so two settings never share a folder however the text is cut)."""
        changed = self.changed_flags()
        if not changed:
            return self.method
        text = "-".join(_folder_safe(f"{k}{'.'.join(map(str, v)) if isinstance(v, list) else v}")
                        for k, v in changed.items())
        return f"{self.method}-{text[:MAX_VARIANT_TEXT].rstrip('-.')}-{_digest(changed, 6)}"

    # --- paths ----------------------------------------------------------------------------------
    @property
    def dataset_tag(self) -> str:
        return dataset_tag(self.dataset, self.data.root_path)

    @property
    def subdir(self) -> Path:
        """<backbone>/<dataset>[/<protocol>]/<K>shots/seed<S>/<variant>: where the run's files live.

        A base-to-novel run trains another adapter (base classes only) on the same draw, so it lives
        in <dataset>/base2new/... and never replaces the few-shot run's.
        """
        dataset = Path(self.dataset_tag)
        if self.protocol != "fewshot":
            dataset = dataset / self.protocol
        return Path(backbone_tag(self.backbone)) / dataset / f"{self.shots}shots" / f"seed{self.seed}" / self.variant

    @property
    def adapter_dir(self) -> Path | None:
        """SAVE_PATH/<subdir>, where --save_path writes the adapter and --eval_only reads it (None without it)."""
        save_path = self.outputs.save_path
        return save_path / self.subdir if save_path is not None else None

    @property
    def checkpoint_path(self) -> Path:
        return self.outputs.checkpoint_dir / self.subdir / "train_state.pt"

    @property
    def subset_path(self) -> Path:
        """<results folder>/subsets/<dataset>[_<protocol>]_<K>shots_seed<S>.json: the draw, which depends on
        the data, the protocol, the shots and the seed only (every method of a sweep shares it); with
        --split_file, `..._seed<S>_split-<digest>.json`, the digest of the file's path and lists, so a
        published draw never replaces ours, nor another file's."""
        protocol = f"_{self.protocol}" if self.protocol != "fewshot" else ""
        split = self.data.split_file
        published = f"_split-{_digest([split, self.flags.get(SPLIT_FILE_DIGEST)], 8)}" if split else ""
        name = f"{self.dataset_tag}{protocol}_{self.shots}shots_seed{self.seed}{published}.json"
        return self.outputs.results_file.parent / "subsets" / name

    @property
    def predictions_path(self) -> Path:
        """<results folder>/predictions/<subdir>.safetensors: the test set's logits and labels, zero-shot and trained
        (--save_predictions), beside the results line and named as the run's other files."""
        return self.outputs.results_file.parent / "predictions" / self.subdir.with_name(self.subdir.name + ".safetensors")

    def log_file(self, log_dir: str | os.PathLike) -> Path:
        """LOG_DIR/<subdir>.log: the sweep's log of this run."""
        return Path(log_dir) / self.subdir.with_name(self.subdir.name + ".log")
