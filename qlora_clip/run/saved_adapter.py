"""Saved adapters: `--save_path` writes one with the run that trained it; `--eval_only` checks it first.

A saved adapter's folder (RunSpec.adapter_dir) holds PEFT's files, a model card, and `run.json`:
the results line of the run that trained it plus a fingerprint of the base checkpoint. Before an
`--eval_only` run loads anything, `check_saved_run` compares that record with the flags and the
base, so an adapter is never evaluated on another base, nor recorded under settings it was not
trained with. Where no adapter matches the flags, the message lists the adapters of the same
method, data, shots and seed that do exist, with the flags they differ in.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from qlora_clip.backbones.identity import base_fingerprint
from qlora_clip.methods.interface import Adapted
from qlora_clip.errors import UserError
from qlora_clip.run.modelcard import write_model_card
from qlora_clip.run.spec import RunSpec

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


def save(adapted: Adapted, record: dict, folder: Path, base_model: str, template: str) -> None:
    """The method's files (its `Adapted.save`), run.json (the record and the base's fingerprint) and the model
    card (`template`: the prompts the run used)."""
    adapted.save(folder)
    run = {**record, "adapter_dir": str(folder), "base_model": base_model,
           "base_fingerprint": base_fingerprint(base_model)}
    tmp = folder / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(run, indent=2, sort_keys=True))
    os.replace(tmp, folder / RUN_FILE)
    write_model_card(folder, record, "adapter", base_model, template)
    log.info("adapter saved to %s", folder)


def _differences(saved: dict, wanted: dict) -> str:
    keys = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
    return ", ".join(f"--{k} {saved.get(k)} (flags: {wanted.get(k)})" for k in keys)


def _others(spec: RunSpec) -> list[tuple[Path, dict]]:
    """The adapters saved for the same backbone, data, protocol, shots, seed and method, with their configs."""
    seed_folder = spec.adapter_dir.parent
    found = []
    if seed_folder.is_dir():
        for folder in sorted(seed_folder.iterdir()):
            run_file = folder / RUN_FILE
            if not run_file.is_file():
                continue
            try:
                run = json.loads(run_file.read_text())
                if run["mode"] == spec.method:  # 'ia3-4bit-...' is not an 'ia3' folder
                    found.append((folder, run["config"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return found


def check_saved_run(spec: RunSpec, base_model: str) -> dict:
    """The record of the run that trained the adapter at spec.adapter_dir, checked against the flags and the
    base; raises UserError naming what differs and what to do."""
    folder = spec.adapter_dir
    run_file = folder / RUN_FILE
    wanted = spec.trained_identity
    if not run_file.is_file():
        others = _others(spec)
        if others:
            listed = "; ".join(f"{path.name}: {_differences(spec.trained_identity_of(config), wanted)}"
                               for path, config in others)
            raise UserError(f"--eval_only: no adapter trained with these flags at {folder}; adapters of this "
                            f"method, data, shots and seed were saved with other settings ({listed}). Pass the "
                            "flags the adapter was trained with.")
        raise UserError(f"--eval_only: no saved adapter at {folder} (adapter files and {RUN_FILE} expected). "
                        "Train with the same flags and --save_path first, or fix --save_path.")
    try:
        saved = json.loads(run_file.read_text())
        config = saved["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"--eval_only: {run_file} is unreadable ({err.__class__.__name__}); the adapter cannot be "
                        "checked against the flags. Train it again with --save_path.") from err
    differs = _differences(spec.trained_identity_of(config), wanted)
    if differs:
        raise UserError(f"--eval_only: the adapter in {folder} was trained with {differs}; pass the flags it was "
                        "trained with.")
    if saved.get("base_fingerprint") not in (None, base_fingerprint(base_model)):
        raise UserError(f"--eval_only: the adapter in {folder} was trained on the base {saved.get('base_model')}, "
                        f"whose files differ from --backbone {spec.backbone} ({base_model}) now; evaluate it on "
                        "the checkpoint it was trained on.")
    return saved
