"""Loading a Hugging Face CLIP-family checkpoint and wrapping it with a PEFT adapter.

LoRA, QLoRA, DoRA and QDoRA are one code path: a `LoraConfig` (with `use_dora` for the DoRA
modes) and, for the Q modes, a 4-bit NF4 base from bitsandbytes. What differs between CLIP,
SigLIP, SigLIP 2 and MetaCLIP 2 (model class, tokenizer, text rules, target modules, what stays
in full precision) comes from the checkpoint's family (families.py).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from safetensors import safe_open
from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

from qlora_clip.compat import keep_cpu_4bit_layout_trainable  # first: quiets bitsandbytes before its import
from qlora_clip.config import AdapterConfig, ImageSettings, ModelConfig, TextSettings
from qlora_clip.errors import UserError
from qlora_clip.families import (CLIP, TOWERS, Family, family_for_config, family_of, hub_id, image_settings,
                                 load_tokenizer)
from qlora_clip.tiny_backbones import TINY_NAMES, tiny_backbone_dir

log = logging.getLogger(__name__)

# The protocol's (CLIP's) modules kept out of 4-bit, as docs/protocol.md names them; every family's
# own list, and why, is its families.Family.full_precision.
FULL_PRECISION_MODULES = list(CLIP.full_precision)


@dataclass
class ClipBundle:
    """The adapted model and what the data pipeline needs to feed it."""
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    image: ImageSettings
    text: TextSettings  # how class prompts become token ids for this family (encode.ClassPrompts)
    family: Family


def resolve_backbone(backbone: str) -> str:
    """An alias, a tiny offline checkpoint's name, a local folder or a hub id -> what `from_pretrained` takes."""
    if backbone in TINY_NAMES:
        return str(tiny_backbone_dir(backbone))
    if backbone.startswith(("/", ".", "~")) and not os.path.isdir(os.path.expanduser(backbone)):
        raise UserError(f"--backbone {backbone}: no such checkpoint folder; give a folder with "
                        "config.json, weights, tokenizer and preprocessor files, a hub id, an alias, or one of "
                        f"{', '.join(TINY_NAMES)}")
    return os.path.expanduser(hub_id(backbone))


def position_layers(position: str, num_layers: int) -> list[int]:
    """Layer indices for a --position, for an encoder of any depth (12-layer values as CLIP-LoRA)."""
    n = num_layers
    spans = {
        "bottom": range(0, n // 3),
        "mid": range(n // 3, 2 * n // 3),
        "up": range(2 * n // 3, n),
        "half-bottom": range(0, n // 2),
        "half-up": range(n // 2, n),
        "all": range(n),
        "top": range(n - 1, n),
        "top3": range(max(n - 3, 0), n),
    }
    return list(spans[position])


def target_module_names(config, encoder: str, position: str, params: list[str]) -> list[str]:
    """Full names of the attention projections that get adapters, by the family's map of the model."""
    family = family_for_config(config)
    names = []
    for tower, tower_config in TOWERS[encoder]:
        depth = family.depth(config, tower_config)
        layers = position_layers(position, depth)
        if not layers:
            raise UserError(f"--position {position} selects no layer of the {depth}-layer "
                            f"{tower}; choose another position")
        for layer in layers:
            for p in params:
                names.append(family.layer_module(tower, layer, p))
    return names


def lora_config(adapter: AdapterConfig, targets: list[str]) -> LoraConfig:
    return LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=targets,
        use_rslora=adapter.rslora,
        use_dora=adapter.method.dora,
        bias="none",
    )


def load_base_model(source: str, family: Family, config: ModelConfig, device: torch.device,
                    compute_dtype: torch.dtype) -> PreTrainedModel:
    quantized = config.adapter.method.quantized
    if quantized:
        kwargs = {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute_dtype,
                llm_int8_skip_modules=list(family.full_precision),  # the name covers 4-bit loading too
            ),
            "device_map": {"": device},
        }
    else:
        # The frozen base is stored in the compute precision; PEFT keeps the adapters in fp32.
        kwargs = {"dtype": compute_dtype}
    try:
        model = family.model_class_object().from_pretrained(source, **kwargs)
    except OSError as err:
        raise UserError(
            f"--backbone {config.backbone}: could not load '{source}' ({err.__class__.__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}). Without network access, use "
            "--backbone tiny or a local checkpoint folder (config.json, weights, tokenizer and "
            "preprocessor files)."
        ) from err
    if quantized:
        # Freezes the base and puts the non-quantized parameters (norms, embeddings) in fp32.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        # PEFT upcasts every non-quantized weight to fp32 for stable norms; the frozen token table
        # (49,408 x width for CLIP, 256,000 for SigLIP 2: most of what is not 4-bit) is only looked up,
        # so keep it in the compute dtype.
        model.text_model.embeddings.token_embedding.to(compute_dtype)
        keep_cpu_4bit_layout_trainable(model)
    else:
        model.to(device)
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input-embedding hooks and works for every mode.
        model.activation_checkpointing_enable({"use_reentrant": False})
    return model


def load_clip(config: ModelConfig, device: torch.device, compute_dtype: torch.dtype,
              saved_adapter: Path | None = None) -> ClipBundle:
    """Base model + tokenizer + image and text settings, with a fresh adapter or the one saved in `saved_adapter`.

    The family, tokenizer and image processor are read first: an unsupported checkpoint or a missing
    tokenizer stops the run before any weights load.
    """
    source = resolve_backbone(config.backbone)
    family = family_of(source, config.backbone)
    tokenizer = load_tokenizer(family, source, config.backbone)
    image = image_settings(source, config.backbone)
    model = load_base_model(source, family, config, device, compute_dtype)
    adapter = config.adapter
    targets = target_module_names(model.config, adapter.encoder, adapter.position, list(adapter.params))
    peft_config = lora_config(adapter, targets)
    if saved_adapter is not None:
        model = load_adapter(model, saved_adapter, peft_config)
    else:
        model = get_peft_model(model, peft_config)
    return ClipBundle(model=model, tokenizer=tokenizer, image=image, text=family.text_settings(model.config),
                      family=family)


# Fields of adapter_config.json that must agree with the flags for a saved adapter to be reused.
_CHECKED_FIELDS = {"r": "--r", "lora_alpha": "--alpha", "use_dora": "--mode", "use_rslora": "--lora_scaling"}


def load_adapter(model: PreTrainedModel, folder: Path, expected: LoraConfig) -> PeftModel:
    config_file = folder / "adapter_config.json"
    weights_file = folder / "adapter_model.safetensors"
    if not (config_file.exists() and weights_file.exists()):
        raise UserError(f"--eval_only: no saved adapter at {folder} (adapter_config.json and "
                        "adapter_model.safetensors expected). Train with the same flags and --save_path "
                        "first, or fix --save_path.")
    saved = json.loads(config_file.read_text())
    for field, flag in _CHECKED_FIELDS.items():
        if getattr(expected, field) != saved.get(field):
            raise UserError(f"--eval_only: the adapter in {folder} was saved with {field}={saved.get(field)}, "
                            f"but the flags ask for {getattr(expected, field)}; pass the {flag} it was trained with.")
    # PEFT shortens target_modules to name suffixes when saving, so the weights say where adapters were.
    with safe_open(weights_file, framework="pt") as f:
        saved_modules = {key.split(".lora_")[0].removeprefix("base_model.model.") for key in f.keys()}
    if saved_modules != set(expected.target_modules):
        raise UserError(f"--eval_only: the adapter in {folder} sits on {len(saved_modules)} modules, but the "
                        f"flags select {len(expected.target_modules)} other ones; pass the "
                        "--encoder/--position/--params it was trained with.")
    # Our own config, not the saved one: its shortened target list would widen the adapter's reach.
    return PeftModel.from_pretrained(model, os.fspath(folder), config=expected, is_trainable=False)


def trainable_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def adapter_parameter_count(model: torch.nn.Module) -> int:
    """Adapter weights, trainable or not (an --eval_only model has them frozen)."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
