"""`--merge_export`: a plain checkpoint of the family's own class (CLIPModel, SiglipModel, MetaClip2Model)
with the adapter merged into the weights, its tokenizer and image processor beside it.

The adapter was trained against the base as the run held it (4-bit NF4 for QLoRA/QDoRA, the
compute dtype otherwise), so it is merged into exactly those weights, dequantized to fp32, not
into the original full-precision ones. `merge_and_unload()` on the 4-bit model itself would
re-quantize the merged weights and lose the adapter's small update.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.utils.integrations import dequantize_module_weight
from transformers import AutoImageProcessor

from qlora_clip.families import family_for_config
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
    """Write the merged model (the family's class), tokenizer and image processor to `folder`; with the run's
    results `record`, also its model card."""
    base = family_for_config(model.config).model_class_object().from_pretrained(source, dtype=torch.float32)
    trained_base = model.get_base_model()
    with torch.no_grad():
        for name, param in base.named_parameters():
            param.copy_(_trained_value(trained_base, name).cpu())
    adapted = get_peft_model(base, copy.deepcopy(model.peft_config["default"]))
    set_peft_model_state_dict(adapted, {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()})
    merged = adapted.merge_and_unload()
    folder.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    AutoImageProcessor.from_pretrained(source).save_pretrained(folder)
    if record is not None:
        write_model_card(folder, record, "merged", source)
    log.info("merged model written to %s", folder)
    return folder
