"""Loading a Hugging Face CLIP-family checkpoint, on a 4-bit NF4 base or not: the one loader of every method.

`open_checkpoint` resolves --backbone once per run (RunSpec.checkpoint): where its files are and its
family, read from config.json before anything else. `load_bundle` then reads the tokenizer and the
image processor (a missing one stops the run before any weights load) and the weights, as the
method's entry asks (4-bit for QLoRA, QDoRA and the other `-4bit` entries); the method goes on it
next (methods/interface.build). What differs between CLIP, SigLIP, SigLIP 2 and MetaCLIP 2 (model
class, tokenizer, text rules, what stays in full precision) comes from the family (families.py).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from peft import prepare_model_for_kbit_training
from safetensors import SafetensorError
from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

from qlora_clip.backbones.compat import keep_cpu_4bit_layout_trainable  # first: quiets bitsandbytes before its import
from qlora_clip.errors import UserError
from qlora_clip.backbones.families import (
    Family,
    ImageSettings,
    TextSettings,
    family_of,
    hub_id,
    image_settings,
    load_tokenizer,
)
from qlora_clip.backbones.tiny_backbones import TINY_NAMES, tiny_backbone_dir, tiny_backbone_path

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Checkpoint:
    """A --backbone resolved: what `from_pretrained` takes, and the checkpoint's family (from its config.json)."""
    backbone: str  # --backbone as given
    source: str    # a local folder or a hub id
    family: Family


@dataclass
class ClipBundle:
    """The loaded base and what the data pipeline needs to feed it."""
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    image: ImageSettings
    text: TextSettings  # how class prompts become token ids for this family (encode.ClassPrompts)
    family: Family
    checkpoint: Checkpoint


def resolve_backbone(backbone: str) -> str:
    """An alias, a tiny offline checkpoint's name, a local folder or a hub id -> what `from_pretrained` takes."""
    if backbone in TINY_NAMES:
        return str(tiny_backbone_dir(backbone))
    if backbone.startswith(("/", ".", "~")) and not os.path.isdir(os.path.expanduser(backbone)):
        raise UserError(f"--backbone {backbone}: no such checkpoint folder; give a folder with "
                        "config.json, weights, tokenizer and preprocessor files, a hub id, an alias, or one of "
                        f"{', '.join(TINY_NAMES)}")
    return os.path.expanduser(hub_id(backbone))


def backbone_folder(backbone: str) -> Path | None:
    """The local folder that holds a --backbone's files, without building or downloading anything.

    A local folder is itself; a tiny checkpoint is its cache folder; a hub id is its repository folder
    in the Hugging Face cache when it has been downloaded. None when there is no such folder yet.
    """
    if backbone in TINY_NAMES:
        return tiny_backbone_path(backbone)
    source = os.path.expanduser(hub_id(backbone))
    if os.path.isdir(source):
        return Path(source)
    try:
        cached = try_to_load_from_cache(source, "config.json")
    except ValueError:  # not a valid hub id either: resolve_backbone will say so
        return None
    # <cache>/models--<org>--<name>/snapshots/<revision>/config.json: the repository folder holds it all.
    return Path(cached).parents[2] if isinstance(cached, str) else None


def open_checkpoint(backbone: str) -> Checkpoint:
    """The checkpoint --backbone names and its family, from config.json only; UserError for a missing or
    unsupported one, naming it and what is supported."""
    source = resolve_backbone(backbone)
    return Checkpoint(backbone, source, family_of(source, backbone))


def load_base_model(checkpoint: Checkpoint, quantized: bool, device: torch.device, compute_dtype: torch.dtype,
                    gradient_checkpointing: bool = False) -> PreTrainedModel:
    """The checkpoint's weights: on a 4-bit NF4 base (frozen, its other weights in fp32 but the token table), or in
    the compute dtype."""
    family, source = checkpoint.family, checkpoint.source
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
    except SafetensorError as err:
        raise UserError(f"--backbone {checkpoint.backbone}: the weights in {source} cannot be read ({err}); the file "
                        "is damaged or cut short: download or copy it again") from err
    except OSError as err:
        raise _could_not_load(checkpoint.backbone, source, err) from err
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
    if gradient_checkpointing:
        # Non-reentrant checkpointing needs no input-embedding hooks and works for every mode.
        model.activation_checkpointing_enable({"use_reentrant": False})
    return model


def _could_not_load(backbone: str, source: str, err: Exception) -> UserError:
    first_line = str(err).splitlines()[0] if str(err) else "no detail"
    return UserError(f"--backbone {backbone}: could not load '{source}' ({err.__class__.__name__}: {first_line}). "
                     "Without network access, use a local checkpoint folder (config.json, weights, tokenizer and "
                     f"preprocessor files) or an offline one: {', '.join(TINY_NAMES)}")


def load_bundle(checkpoint: Checkpoint, quantized: bool, device: torch.device, compute_dtype: torch.dtype,
                gradient_checkpointing: bool = False) -> ClipBundle:
    """Tokenizer, image and text settings, then the weights: a missing tokenizer or preprocessor settings stop
    the run before any weights load."""
    family, source = checkpoint.family, checkpoint.source
    tokenizer = load_tokenizer(family, source, checkpoint.backbone)
    image = image_settings(source, checkpoint.backbone)
    model = load_base_model(checkpoint, quantized, device, compute_dtype, gradient_checkpointing)
    return ClipBundle(model=model, tokenizer=tokenizer, image=image, text=family.text_settings(model.config),
                      family=family, checkpoint=checkpoint)
