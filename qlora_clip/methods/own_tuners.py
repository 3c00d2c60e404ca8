"""BitFit and full fine-tuning of the targeted projections: the two methods PEFT has no config for.

Both train parameters of the base itself, so the model stays a plain `CLIPModel`: BitFit the
biases of the targeted projections, full fine-tuning their weights and biases. What the rest of
the code needs from an adapter is kept on the model as an `OwnTuning`: which parameters are tuned
and their pretrained values, so that zero-shot evaluates the pretrained model
(adapters.zero_shot_view), a tower counts as adapted, and only the tuned tensors are saved.

Saved form: `tuned_weights.safetensors` (the tuned tensors under their CLIPModel names) and
`tuned_config.json`; plain transformers loads them with `load_state_dict(..., strict=False)`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from qlora_clip.errors import UserError

TUNED = "_qlora_clip_tuned"  # the attribute of the model that holds its OwnTuning
WEIGHTS_FILE = "tuned_weights.safetensors"
CONFIG_FILE = "tuned_config.json"
ATTRIBUTES = {"bias": ("bias",), "full": ("weight", "bias")}


@dataclass
class OwnTuning:
    kind: str                            # 'bias' (BitFit) or 'full'
    targets: list[str]                   # the targeted modules
    originals: dict[str, torch.Tensor]   # tuned parameter name -> its pretrained value


def tuning(model: torch.nn.Module) -> OwnTuning | None:
    return getattr(model, TUNED, None)


def tuned_names(model: torch.nn.Module, kind: str, targets: list[str]) -> list[str]:
    """The parameters `kind` tunes in `targets` (a projection without a bias has none to tune)."""
    names = []
    for target in targets:
        module = model.get_submodule(target)
        names += [f"{target}.{attr}" for attr in ATTRIBUTES[kind] if getattr(module, attr, None) is not None]
    return names


def attach(model: torch.nn.Module, kind: str, targets: list[str]) -> torch.nn.Module:
    """Freeze everything but the tuned parameters, which train in fp32 (as PEFT keeps adapters), and
    remember their pretrained values."""
    for param in model.parameters():
        param.requires_grad_(False)
    names = tuned_names(model, kind, targets)
    if not names:
        raise UserError(f"--params: the targeted projections have no {' or '.join(ATTRIBUTES[kind])} to tune")
    params = dict(model.named_parameters())
    for name in names:
        param = params[name]
        if not param.is_floating_point():
            raise UserError(f"{name} is stored in 4-bit; only its bias could train (use bitfit, not full)")
        param.data = param.data.float()
        param.requires_grad_(True)
    setattr(model, TUNED, OwnTuning(kind, list(targets), {n: params[n].detach().clone() for n in names}))
    return model


def tuned_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tuned tensors as they are now, under their CLIPModel names."""
    own = tuning(model)
    params = dict(model.named_parameters())
    return {name: params[name].detach() for name in own.originals}


def save(model: torch.nn.Module, folder: Path) -> None:
    own = tuning(model)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.cpu().contiguous() for k, v in tuned_state(model).items()}, folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps({"kind": own.kind, "targets": own.targets,
                                                  "tuned": sorted(own.originals)}, indent=2))


def load(model: torch.nn.Module, folder: Path, kind: str, targets: list[str]) -> torch.nn.Module:
    """The saved tuned tensors in place of the pretrained ones (frozen, for evaluation)."""
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise UserError(f"--eval_only: no saved weights at {weights}. Train with the same flags and --save_path "
                        "first, or fix --save_path.")
    expected = set(tuned_names(model, kind, targets))
    saved = load_file(weights)
    if set(saved) != expected:
        raise UserError(f"--eval_only: {weights} holds {len(saved)} tensors, but the flags tune {len(expected)} "
                        "others; pass the --mode/--encoder/--position/--params it was trained with.")
    for param in model.parameters():
        param.requires_grad_(False)
    params = dict(model.named_parameters())
    originals = {}
    with torch.no_grad():
        for name, value in saved.items():
            originals[name] = params[name].detach().clone()
            params[name].data = value.to(device=params[name].device, dtype=torch.float32)
    setattr(model, TUNED, OwnTuning(kind, list(targets), originals))
    return model
