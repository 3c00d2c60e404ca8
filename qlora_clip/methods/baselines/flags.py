"""The main.py flags a baseline does not take, checked before anything loads (no torch here).

A baseline runs with its paper's hyperparameters (hparams.py) on the frozen base: the adapter and
optimiser flags of the PEFT methods would be silently ignored, so a run that changes one is refused,
naming the flag, rather than recorded as if it had mattered. The same holds for what a baseline
cannot do yet: save or resume an adapter, base-to-novel, other datasets' test sets, step tracking.
"""
from __future__ import annotations

from typing import Any, Mapping

# flag: why a baseline refuses a value other than its default
NOT_FOR_BASELINES = {
    "r": "adapter rank", "alpha": "adapter alpha", "dropout_rate": "adapter dropout",
    "lora_scaling": "adapter scaling", "quantize": "a 4-bit base", "peft_args": "a PEFT config", "encoder": "adapter placement", "position": "adapter placement",
    "params": "adapter placement", "lr": "the PEFT optimiser's learning rate",
    "loss": "the adapters' training loss",
    "n_iters": "the PEFT schedule", "batch_size": "the PEFT batch size",
    "gradient_accumulation_steps": "the PEFT batches", "gradient_checkpointing": "the PEFT training step",
    "save_path": "saved adapters", "eval_only": "saved adapters", "checkpoint_every": "training states",
    "resume": "training states", "merge_export": "merged exports", "protocol": "base-to-novel",
    "eval_datasets": "other datasets' test sets", "report_to": "per-step tracking",
}


def baseline_flag_errors(flags: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """One message per flag that `--mode <baseline>` does not take but was given another value."""
    mode = flags["mode"]
    return [f"--{name} {_shown(flags[name])}: --mode {mode} is a baseline with its paper's hyperparameters "
            f"(docs/baselines.md) and does not use {why}; {_leave(name, defaults.get(name))}"
            for name, why in NOT_FOR_BASELINES.items() if flags.get(name) != defaults.get(name)]


def _leave(name: str, default: Any) -> str:
    return f"leave --{name} out" if default is None else f"leave --{name} at its default ({_shown(default)})"


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)
