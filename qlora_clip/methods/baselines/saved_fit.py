"""Methods fitted on frozen features that keep their fit (ProKeR, CLAP): --save_path writes it, --eval_only reads it.

Their fit is a few tensors beside the frozen base (ProKeR's support features and coefficients, CLAP's class
prototypes) plus the class prompts their rows belong to. A class prompt is looked up by its text: a class the
fit has a row for uses it, any other (base-to-novel's new classes, --eval_datasets) gets what the method
gives an unseen class (both: its zero-shot score). Saved form: `fit.safetensors` and `fit.json` (the fit's
hyperparameters and the row prompts); the base is checked with run.json's fingerprint before loading.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.methods.baselines.base import FeatureBaseline, Fitted
from qlora_clip.methods.interface import require_saved
from qlora_clip.methods.settings import AdapterConfig

FIT_FILE = "fit.safetensors"
FIT_CONFIG = "fit.json"


def row_of(fitted_prompts: list[str], prompts: ClassPrompts) -> list[int | None]:
    """For each of `prompts`, the row the fit has for it (by its text), or None."""
    rows = {prompt: row for row, prompt in enumerate(fitted_prompts)}
    return [rows.get(prompt) for prompt in prompts.prompts]


class SavedFeatureFit(FeatureBaseline):
    """A FeatureBaseline whose fit can be saved and reloaded; the subclass rebuilds its Fitted (`restore`)."""
    plain_load = False  # its tensors classify through this library's code
    saved_files = (FIT_CONFIG, FIT_FILE)  # its config, then its tensors

    @classmethod
    def restore(cls, adapted: SavedFeatureFit, tensors: dict[str, torch.Tensor], params: dict,
                prompts: list[str]) -> Fitted:
        """The Fitted of a saved fit, its tensors on the device."""
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().float().cpu().contiguous() for k, v in self.fitted.saved.items()}, folder / FIT_FILE)
        (folder / FIT_CONFIG).write_text(json.dumps({"mode": self.method.name, "params": self.fitted.params,
                                                     "prompts": self.fitted.prompts}, indent=2))

    @classmethod
    def load(cls, bundle: ClipBundle, settings: AdapterConfig, folder: Path) -> SavedFeatureFit:
        path, config = folder / FIT_FILE, folder / FIT_CONFIG
        require_saved(folder, "fit", FIT_FILE, FIT_CONFIG)
        saved = json.loads(config.read_text())
        adapted = cls(bundle, settings)
        device = next(bundle.model.parameters()).device
        tensors = {k: v.to(device) for k, v in load_file(path).items()}
        adapted.fitted = cls.restore(adapted, tensors, saved["params"], saved["prompts"])
        return adapted

    def fields(self) -> dict:
        fields = super().fields()
        if self.fitted is not None:
            saved = self.fitted.saved.values()
            fields["adapter_size_mb"] = sum(t.numel() * 4 for t in saved) / 2**20  # written as float32
        return fields
