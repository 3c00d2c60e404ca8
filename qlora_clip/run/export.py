"""`--merge_export`: a plain checkpoint of the family's own class (CLIPModel, SiglipModel, MetaClip2Model)
with the adapter merged into the weights, its tokenizer and image processor beside it.

The adapter was trained against the base as the run held it (4-bit NF4 for the 4-bit methods, the
compute dtype otherwise, PiSSA's and OLoRA's residual), so it is merged into exactly those weights,
dequantized to fp32, not into the original full-precision ones. `merge_and_unload()` on the 4-bit
model itself would re-quantize the merged weights and lose the adapter's small update. Every
method that can merge does it through its own `Adapted.merged` (BitFit and full fine-tuning are
already plain weights); the flags refuse --merge_export for the others before loading anything.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from peft.utils.integrations import dequantize_module_weight
from transformers import AutoImageProcessor

from qlora_clip.errors import UserError
from qlora_clip.methods.interface import Adapted
from qlora_clip.run.modelcard import model_card
from qlora_clip.run.outputs import export_target_error

log = logging.getLogger(__name__)


def _trained_value(trained_base: torch.nn.Module, name: str) -> torch.Tensor:
    """The value the adapted model used for base parameter `name`, dense and in fp32."""
    module_name, _, attr = name.rpartition(".")
    module = trained_base.get_submodule(module_name)
    module = getattr(module, "base_layer", module)  # under a PEFT adapter layer
    if attr == "weight" and hasattr(module.weight, "quant_state"):
        return dequantize_module_weight(module).float()
    return getattr(module, attr).detach().float()


def export_merged(adapted: Adapted, source: str, folder: Path, record: dict | None = None, overwrite: bool = False,
                  template: str | None = None) -> Path:
    """Write the merged model (the family's class), tokenizer and image processor to `folder`; with the run's results
    `record`, also its model card.

    Everything is written to a hidden folder beside `folder` and renamed into place, so a failed
    export leaves no half-written model, and an `overwrite` replaces the old export as a whole
    (no file of it stays behind to be mixed with the new one).
    """
    refusal = export_target_error(folder, overwrite)  # checked at the start too; the folder may have changed
    if refusal:
        raise UserError(refusal)
    bundle = adapted.bundle
    base = bundle.family.model_class_object().from_pretrained(source, dtype=torch.float32)
    trained_base = adapted.base_model()
    with torch.no_grad():
        for name, param in base.named_parameters():
            param.copy_(_trained_value(trained_base, name).cpu())
    merged = adapted.merged(base)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.export-"))
    try:
        merged.save_pretrained(staging)
        bundle.tokenizer.save_pretrained(staging)
        AutoImageProcessor.from_pretrained(source).save_pretrained(staging)
        if record is not None:  # the card names the folder the model will be in, not the staging one
            (staging / "README.md").write_text(str(model_card(record, "merged", source, folder, template)))
        _move_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("merged model written to %s", folder)
    return folder


def _move_into_place(staging: Path, folder: Path) -> None:
    """Rename `staging` to `folder`, replacing an empty folder or (overwrite, checked) a previous export."""
    if folder.is_dir() and any(folder.iterdir()):
        replaced = folder.with_name(f".{folder.name}.replaced-{os.getpid()}")
        os.rename(folder, replaced)
        os.rename(staging, folder)
        shutil.rmtree(replaced)
        log.info("--overwrite_export: replaced the previous export in %s", folder)
    else:
        if folder.is_dir():
            folder.rmdir()
        os.rename(staging, folder)
