"""CLIP-SVD (Koleilat et al., 2025): fine-tune only the singular values of the chosen weight matrices.

Every Linear of the selected layers of both towers (q, k, v, o and the MLP's fc1, fc2: the published
runs' choice, `Method.targets == "linears"`) has its weight decomposed once, W = U diag(s0) V^T at full
rank r = min(out, in), by an SVD in float64 kept in float32. The vector s (r values, float32) starts at
s0 and is all that trains; U and V are frozen buffers. The layer's weight becomes a torch
parametrization of the pretrained one,

    W(s) = W + U diag(s - s0) V^T,

which is U diag(s) V^T up to the decomposition's float64 rounding (a fixed residual, far below the
float32 weight's own), and is exactly W, bit for bit, wherever s = s0: at step 0 and in the zero-shot
view (which switches the shift off). Step 0 therefore computes what the base computes, and the merged
weight is the parametrized weight's value.

Where we differ from the official code (HealthX-Lab/CLIP-SVD, svf_utils/svf_torch.py):
- full rank: its rank rule rounds min(out, in) down to a multiple of 4 (#L268-L273), which would drop
  singular values of other widths and break the step-0 reconstruction (widths of some checkpoints);
- the weight is rebuilt per forward (out x r x in multiply-adds per Linear, batch-independent) instead
  of its three products fc_U(s * fc_V(x)) (#L73-L77): the same function, one matmul per token instead
  of two, and nothing to convert for the merge.

Saved form (--save_path): `svd_values.safetensors` with s of every targeted module under
'<module>.singular_values' (92,160 floats on ViT-B/16), and `svd_config.json`. --eval_only decomposes the
same base again (run.json's fingerprint says it is the same) and puts the saved s in place. The 4-bit
base is refused by the table entry: U and V are dense (docs/methods.md).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.backbones.targets import tower_of
from qlora_clip.errors import UserError
from qlora_clip.methods.interface import Adapted
from qlora_clip.methods.settings import AdapterConfig

VALUES_FILE = "svd_values.safetensors"
CONFIG_FILE = "svd_config.json"
SUFFIX = ".singular_values"


class SingularValueShift(nn.Module):
    """The parametrization W -> W + U diag(s - s0) V^T of one Linear's weight; `s` is its trainable parameter."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        u, s, vh = torch.linalg.svd(weight.detach().to(torch.float64), full_matrices=False)
        self.register_buffer("u", u.float())
        self.register_buffer("vh", vh.float())
        self.register_buffer("s0", s.float())
        self.s = nn.Parameter(s.float())
        self.active = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return weight
        shift = (self.u * (self.s - self.s0)) @ self.vh
        return weight + shift.to(weight.dtype)

    def singular_weight(self) -> torch.Tensor:
        """U diag(s) V^T in float64: the weight the singular values stand for."""
        return (self.u.double() * self.s.detach().double()) @ self.vh.double()


class SingularValues(Adapted):
    """The singular values of the targeted Linears of the base, trained in place of their weights."""
    plain_load = False  # s alone is saved: the base must be decomposed again (or use --merge_export)
    saved_files = (CONFIG_FILE, VALUES_FILE)  # what --save_path writes: its config, then its tensors

    def __init__(self, bundle: ClipBundle, settings: AdapterConfig, targets: list[str]):
        super().__init__(bundle, settings)
        self.targets = list(targets)

    @classmethod
    def attach(cls, bundle: ClipBundle, settings: AdapterConfig) -> SingularValues:
        """Freeze the base, decompose every targeted weight and leave only the singular values trainable."""
        model = bundle.model
        targets = settings.targets(bundle.family, model.config)
        model.requires_grad_(False)
        for name in targets:
            module = model.get_submodule(name)
            if not isinstance(module, nn.Linear) or not module.weight.is_floating_point():
                raise UserError(f"--mode {settings.mode}: {name} is not a full-precision Linear layer; its weight "
                                "cannot be decomposed")
            parametrize.register_parametrization(module, "weight", SingularValueShift(module.weight))
        return cls(bundle, settings, targets)

    @classmethod
    def load(cls, bundle: ClipBundle, settings: AdapterConfig, folder: Path) -> SingularValues:
        """The base decomposed again, with the saved singular values (frozen, for evaluation)."""
        path = folder / VALUES_FILE
        if not path.exists():
            raise UserError(f"--eval_only: no saved singular values at {path}. Train with the same flags and "
                            "--save_path first, or fix --save_path.")
        adapted = cls.attach(bundle, settings)
        saved, shifts = load_file(path), adapted.shifts()
        if set(saved) != {name + SUFFIX for name in shifts}:
            raise UserError(f"--eval_only: {path} holds the singular values of {len(saved)} matrices, but the flags "
                            f"decompose {len(shifts)} others; pass the --encoder/--position it was trained with.")
        with torch.no_grad():
            for name, shift in shifts.items():
                value = saved[name + SUFFIX]
                if value.shape != shift.s.shape:
                    raise UserError(f"--eval_only: {path}: {name} has {value.numel()} singular values, the base's "
                                    f"weight {shift.s.numel()}; evaluate it on the base it was trained on.")
                shift.s.copy_(value)
                shift.s.requires_grad_(False)
        return adapted

    def shifts(self) -> dict[str, SingularValueShift]:
        """The parametrization of each targeted module, by module name."""
        return {name: self.model.get_submodule(name).parametrizations.weight[0] for name in self.targets}

    def zero_shot_view(self) -> contextlib.AbstractContextManager:
        return self._pretrained()

    @contextlib.contextmanager
    def _pretrained(self) -> Iterator[None]:
        shifts = list(self.shifts().values())
        for shift in shifts:
            shift.active = False
        try:
            yield
        finally:
            for shift in shifts:
                shift.active = True

    @contextlib.contextmanager
    def interpolated(self, alpha: float) -> Iterator[None]:
        """The weights (1 - alpha) W_0 + alpha W_1 (--interpolate): W is linear in s, so they are the weights of the
        singular values s0 + alpha (s - s0); exact at 0 (s0: the base) and 1 (s, untouched)."""
        shifts = list(self.shifts().values())
        trained = [shift.s.detach().clone() for shift in shifts]
        with torch.no_grad():
            for shift, s in zip(shifts, trained):
                if alpha != 1:
                    shift.s.copy_(shift.s0 + alpha * (s - shift.s0))
        try:
            yield
        finally:
            with torch.no_grad():
                for shift, s in zip(shifts, trained):
                    shift.s.copy_(s)

    def tower_is_adapted(self, tower: str) -> bool:
        return any(tower_of(name) == tower for name in self.targets)

    def singular_values(self) -> dict[str, torch.Tensor]:
        """The trained s of every targeted module, under the names the saved file uses."""
        return {name + SUFFIX: shift.s.detach() for name, shift in self.shifts().items()}

    def fields(self) -> dict:
        values = self.singular_values()
        return {"trainable_params": self.trainable_parameters(),
                "adapter_params": sum(v.numel() for v in values.values()),
                "adapter_size_mb": sum(v.numel() * v.element_size() for v in values.values()) / 2**20,
                "peft_config": {"peft_type": None, "qlora_clip_tuner": "singular_values", "rank": "full",
                                "target_modules": self.targets},
                "method_args": {}}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.cpu().contiguous() for k, v in self.singular_values().items()}, folder / VALUES_FILE)
        ranks = {name: shift.s.numel() for name, shift in self.shifts().items()}
        (folder / CONFIG_FILE).write_text(json.dumps({"kind": "singular_values", "targets": self.targets,
                                                      "ranks": ranks}, indent=2))

    def merged(self, base: torch.nn.Module) -> torch.nn.Module:
        """`base` already holds W + U diag(s - s0) V^T: the export copies each parametrized weight's value."""
        return base
