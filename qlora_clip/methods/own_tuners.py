"""BitFit and full fine-tuning of the targeted projections: the two methods PEFT has no config for.

Both train parameters of the base itself, so the model stays a plain `CLIPModel`: BitFit the
biases of the targeted projections, full fine-tuning their weights and biases. A `TunedParameters`
(methods/interface.py) keeps which parameters are tuned and their pretrained values, so that
zero-shot evaluates the pretrained model, a tower counts as adapted, and only the tuned tensors
are saved.

Saved form: `tuned_weights.safetensors` (the tuned tensors under their CLIPModel names) and
`tuned_config.json`; plain transformers loads them with `load_state_dict(..., strict=False)`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.backbones.targets import tower_of
from qlora_clip.errors import UserError
from qlora_clip.methods.interface import Adapted
from qlora_clip.methods.peft_tuners import swapped
from qlora_clip.methods.settings import AdapterConfig

WEIGHTS_FILE = "tuned_weights.safetensors"
CONFIG_FILE = "tuned_config.json"


class TunedParameters(Adapted):
    """Parameters of the base itself trained in place (`tunes`: which attributes of the targeted modules)."""
    tunes: tuple[str, ...] = ()
    kind = ""  # the saved config's name for it

    def __init__(self, bundle: ClipBundle, settings: AdapterConfig, targets: list[str],
                 originals: dict[str, torch.Tensor]):
        super().__init__(bundle, settings)
        self.targets = list(targets)
        self.originals = originals  # tuned parameter name -> its pretrained value

    @classmethod
    def tuned_names(cls, model: torch.nn.Module, targets: list[str]) -> list[str]:
        """The parameters it tunes in `targets` (a projection without a bias has none to tune)."""
        names = []
        for target in targets:
            module = model.get_submodule(target)
            names += [f"{target}.{attr}" for attr in cls.tunes if getattr(module, attr, None) is not None]
        return names

    @classmethod
    def attach(cls, bundle: ClipBundle, settings: AdapterConfig) -> TunedParameters:
        """Freeze everything but the tuned parameters, which train in fp32 (as PEFT keeps adapters), and remember
        their pretrained values."""
        model = bundle.model
        targets = settings.targets(bundle.family, model.config)
        for param in model.parameters():
            param.requires_grad_(False)
        names = cls.tuned_names(model, targets)
        if not names:
            raise UserError(f"--params: the targeted projections have no {' or '.join(cls.tunes)} to tune")
        params = dict(model.named_parameters())
        for name in names:
            param = params[name]
            if not param.is_floating_point():
                raise UserError(f"{name} is stored in 4-bit; only its bias could train (use bitfit, not full)")
            param.data = param.data.float()
            param.requires_grad_(True)
        return cls(bundle, settings, targets, {n: params[n].detach().clone() for n in names})

    @classmethod
    def load(cls, bundle: ClipBundle, settings: AdapterConfig, folder: Path) -> TunedParameters:
        """The saved tuned tensors in place of the pretrained ones (frozen, for evaluation)."""
        model = bundle.model
        targets = settings.targets(bundle.family, model.config)
        weights = folder / WEIGHTS_FILE
        if not weights.exists():
            raise UserError(f"--eval_only: no saved weights at {weights}. Train with the same flags and --save_path "
                            "first, or fix --save_path.")
        expected = set(cls.tuned_names(model, targets))
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
        return cls(bundle, settings, targets, originals)

    def zero_shot_view(self):
        return swapped(dict(self.model.named_parameters()), self.originals)

    def interpolated(self, alpha: float):
        """Each tuned tensor at (1 - alpha) x its pretrained value + alpha x its trained one (WiSE-FT), computed in
        the trained tensor's dtype: exactly the pretrained value at 0 and the trained one at 1."""
        params = dict(self.model.named_parameters())
        values = {}
        for name, original in self.originals.items():
            trained = params[name].detach()
            values[name] = ((1 - alpha) * original.to(trained.dtype) + alpha * trained).to(trained.dtype)
        return swapped(params, values)

    def tower_is_adapted(self, tower: str) -> bool:
        return any(tower_of(name) == tower for name in self.originals)

    def tuned_state(self) -> dict[str, torch.Tensor]:
        """The tuned tensors as they are now, under their CLIPModel names."""
        params = dict(self.model.named_parameters())
        return {name: params[name].detach() for name in self.originals}

    def fields(self) -> dict:
        state = self.tuned_state()
        return {"trainable_params": self.trainable_parameters(),
                "adapter_params": sum(t.numel() for t in self.originals.values()),
                "adapter_size_mb": sum(t.numel() * t.element_size() for t in state.values()) / 2**20,
                "peft_config": {"peft_type": None, "qlora_clip_tuner": self.kind, "target_modules": self.targets,
                                "tuned_parameters": sorted(self.originals)},
                "method_args": {}}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.cpu().contiguous() for k, v in self.tuned_state().items()}, folder / WEIGHTS_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps({"kind": self.kind, "targets": self.targets,
                                                      "tuned": sorted(self.originals)}, indent=2))

    def merged(self, base: torch.nn.Module) -> torch.nn.Module:
        """The tuned values are the base's own: `base` already holds them."""
        return base


class BitFit(TunedParameters):
    """The biases of the targeted projections (Ben Zaken et al., ACL 2022)."""
    tunes = ("bias",)
    kind = "bias"


class FullFineTuning(TunedParameters):
    """Every weight and bias of the targeted projections: the reference the adapters approximate."""
    tunes = ("weight", "bias")
    kind = "full"
