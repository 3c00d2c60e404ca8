"""Loading a Hugging Face CLIP (a 4-bit NF4 base or not) and putting the method's adapter on it.

Every method is one code path: the base as the method's table entry asks (4-bit for QLoRA, QDoRA
and the other `-4bit` entries), then adapters.attach (or adapters.load_adapter for --eval_only).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from qlora_clip import adapters
from qlora_clip.compat import keep_cpu_4bit_layout_trainable
from qlora_clip.config import ImageSettings, ModelConfig
from qlora_clip.errors import UserError
from qlora_clip.paper import BACKBONE_ALIASES
from qlora_clip.tiny_clip import tiny_checkpoint_dir

log = logging.getLogger(__name__)

# The two projections into the shared image-text space stay in full precision in the 4-bit modes.
# Left to itself transformers keeps only the last module it finds (text_projection) and quantizes
# visual_projection; one rule for both keeps the two towers' features equally precise
# (docs/protocol.md, "The 4-bit base"). They are small: 0.6 M weights for ViT-B/16.
FULL_PRECISION_MODULES = ["visual_projection", "text_projection"]


@dataclass
class ClipBundle:
    """The adapted model and what the data pipeline needs to feed it."""
    model: torch.nn.Module
    tokenizer: CLIPTokenizer
    image: ImageSettings


def resolve_backbone(backbone: str) -> str:
    """A paper alias, 'tiny', a local folder or a hub id -> what `from_pretrained` takes."""
    if backbone == "tiny":
        return str(tiny_checkpoint_dir())
    if backbone.startswith(("/", ".", "~")) and not os.path.isdir(os.path.expanduser(backbone)):
        raise UserError(f"--backbone {backbone}: no such checkpoint folder; give a folder with "
                        "config.json, weights, tokenizer and preprocessor files, a hub id, or 'tiny'")
    return os.path.expanduser(BACKBONE_ALIASES.get(backbone, backbone))


def load_base_model(source: str, config: ModelConfig, device: torch.device,
                    compute_dtype: torch.dtype) -> CLIPModel:
    quantized = config.adapter.method.quantized
    if quantized:
        kwargs = {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute_dtype,
                llm_int8_skip_modules=FULL_PRECISION_MODULES,  # the name covers 4-bit loading too
            ),
            "device_map": {"": device},
        }
    else:
        # The frozen base is stored in the compute precision; PEFT keeps the adapters in fp32.
        kwargs = {"dtype": compute_dtype}
    try:
        model = CLIPModel.from_pretrained(source, **kwargs)
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
        # (49,408 x width, most of what is not 4-bit) is only looked up, so keep it in the compute dtype.
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
    """Base CLIP + tokenizer + image settings, with a fresh adapter or the one saved in `saved_adapter`."""
    source = resolve_backbone(config.backbone)
    model = load_base_model(source, config, device, compute_dtype)
    if saved_adapter is not None:
        model = adapters.load_adapter(model, saved_adapter, config.adapter)
    else:
        model = adapters.attach(model, config.adapter, source)
    processor = CLIPImageProcessor.from_pretrained(source)
    crop = processor.crop_size
    image = ImageSettings(image_size=int(crop["height"]),
                          resize_size=int(processor.size.get("shortest_edge", crop["height"])),
                          mean=tuple(processor.image_mean), std=tuple(processor.image_std))
    return ClipBundle(model=model, tokenizer=CLIPTokenizer.from_pretrained(source), image=image)
