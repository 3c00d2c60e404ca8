"""`--merge_export`: a plain CLIPModel checkpoint with the adapter merged into the weights.

The adapter was trained against the base as the run held it (4-bit NF4 for the 4-bit methods, the
compute dtype otherwise, PiSSA's and OLoRA's residual), so it is merged into exactly those weights,
dequantized to fp32, not into the original full-precision ones. `merge_and_unload()` on the 4-bit
model itself would re-quantize the merged weights and lose the adapter's small update. Every
method PEFT can merge goes through adapters.merged_model (BitFit and full fine-tuning are already
plain weights); main.py refuses --merge_export for the others before loading anything.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from peft import PeftModel
from peft.utils.integrations import dequantize_module_weight
from transformers import CLIPImageProcessor, CLIPModel

from qlora_clip.adapters import merged_model
from qlora_clip.modelcard import write_model_card

log = logging.getLogger(__name__)


def _trained_value(trained_base: torch.nn.Module, name: str) -> torch.Tensor:
    """The value the adapted model used for base parameter `name`, dense and in fp32."""
    module_name, _, attr = name.rpartition(".")
    module = trained_base.get_submodule(module_name)
    module = getattr(module, "base_layer", module)  # under a PEFT adapter layer
    if attr == "weight" and hasattr(module.weight, "quant_state"):
        return dequantize_module_weight(module).float()
    return getattr(module, attr).detach().float()


def export_merged(model, tokenizer, source: str, folder: Path, record: dict | None = None) -> Path:
    """Write the merged CLIPModel, tokenizer and image processor to `folder`; with the run's results
    `record`, also its model card."""
    base = CLIPModel.from_pretrained(source, dtype=torch.float32)
    trained_base = model.get_base_model() if isinstance(model, PeftModel) else model
    with torch.no_grad():
        for name, param in base.named_parameters():
            param.copy_(_trained_value(trained_base, name).cpu())
    merged = merged_model(model, base)
    folder.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor.from_pretrained(source).save_pretrained(folder)
    if record is not None:
        write_model_card(folder, record, "merged", source)
    log.info("merged model written to %s", folder)
    return folder
