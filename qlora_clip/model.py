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
from huggingface_hub import try_to_load_from_cache
from peft import prepare_model_for_kbit_training
from safetensors import SafetensorError
from transformers import BitsAndBytesConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer, PretrainedConfig

from qlora_clip import adapters
from qlora_clip.compat import keep_cpu_4bit_layout_trainable
from qlora_clip.config import ImageSettings, ModelConfig
from qlora_clip.errors import UserError
from qlora_clip.paper import BACKBONE_ALIASES
from qlora_clip.tiny_clip import tiny_checkpoint_dir, tiny_checkpoint_path

log = logging.getLogger(__name__)

# The two projections into the shared image-text space stay in full precision in the 4-bit modes.
# Left to itself transformers keeps only the last module it finds (text_projection) and quantizes
# visual_projection; one rule for both keeps the two towers' features equally precise
# (docs/protocol.md, "The 4-bit base"). They are small: 0.6 M weights for ViT-B/16.
FULL_PRECISION_MODULES = ["visual_projection", "text_projection"]
# config.json model types this loader takes: CLIPModel's own (both towers, projections, logit scale).
SUPPORTED_MODEL_TYPES = ("clip",)


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


def backbone_folder(backbone: str) -> Path | None:
    """The local folder that holds a --backbone's files, without building or downloading anything.

    A local folder is itself; 'tiny' is its cache folder; a hub id is its repository folder in the
    Hugging Face cache when it has been downloaded. None when there is no such folder yet.
    """
    if backbone == "tiny":
        return tiny_checkpoint_path()
    source = os.path.expanduser(BACKBONE_ALIASES.get(backbone, backbone))
    if os.path.isdir(source):
        return Path(source)
    try:
        cached = try_to_load_from_cache(source, "config.json")
    except ValueError:  # not a valid hub id either: resolve_backbone will say so
        return None
    # <cache>/models--<org>--<name>/snapshots/<revision>/config.json: the repository folder holds it all.
    return Path(cached).parents[2] if isinstance(cached, str) else None


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
    except SafetensorError as err:
        raise UserError(f"--backbone {config.backbone}: the weights in {source} cannot be read ({err}); the file is "
                        "damaged or cut short: download or copy it again") from err
    except OSError as err:
        raise _could_not_load(config.backbone, source, err) from err
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


def _could_not_load(backbone: str, source: str, err: Exception) -> UserError:
    first_line = str(err).splitlines()[0] if str(err) else "no detail"
    return UserError(f"--backbone {backbone}: could not load '{source}' ({err.__class__.__name__}: {first_line}). "
                     "Without network access, use --backbone tiny or a local checkpoint folder (config.json, "
                     "weights, tokenizer and preprocessor files).")


def check_clip_config(backbone: str, source: str) -> None:
    """Refuse a checkpoint that is not a CLIP before its weights load.

    Given another architecture's config.json, CLIPModel.from_pretrained warns and builds a CLIP
    with random weights, which then trains and reports numbers.
    """
    try:
        config, _ = PretrainedConfig.get_config_dict(source)
    except OSError as err:
        raise _could_not_load(backbone, source, err) from err
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"--backbone {backbone}: {source} holds a model of type {model_type!r} (its config.json), "
                        f"not a CLIP with both towers; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}")


def image_settings(backbone: str, source: str) -> ImageSettings:
    """What the vision tower expects, from the checkpoint's preprocessor_config.json."""
    try:
        processor = CLIPImageProcessor.from_pretrained(source)
    except OSError as err:
        if os.path.isdir(source) and not os.path.isfile(os.path.join(source, "preprocessor_config.json")):
            raise UserError(f"--backbone {backbone}: {source} has no preprocessor_config.json (the image size, "
                            "mean and std the model was trained with); copy it from the checkpoint the folder "
                            "came from") from err
        raise _could_not_load(backbone, source, err) from err
    crop = processor.crop_size
    return ImageSettings(image_size=int(crop["height"]),
                         resize_size=int(processor.size.get("shortest_edge", crop["height"])),
                         mean=tuple(processor.image_mean), std=tuple(processor.image_std))


def load_tokenizer(backbone: str, source: str) -> CLIPTokenizer:
    try:
        return CLIPTokenizer.from_pretrained(source)
    except OSError as err:
        raise _could_not_load(backbone, source, err) from err


def load_clip(config: ModelConfig, device: torch.device, compute_dtype: torch.dtype,
              saved_adapter: Path | None = None) -> ClipBundle:
    """Base CLIP + tokenizer + image settings, with a fresh adapter or the one saved in `saved_adapter`.

    The small files come first, so a checkpoint that is not a CLIP, or lacks its preprocessor
    settings, is refused before its weights load.
    """
    source = resolve_backbone(config.backbone)
    check_clip_config(config.backbone, source)
    image = image_settings(config.backbone, source)
    tokenizer = load_tokenizer(config.backbone, source)
    model = load_base_model(source, config, device, compute_dtype)
    if saved_adapter is not None:
        model = adapters.load_adapter(model, saved_adapter, config.adapter)
    else:
        model = adapters.attach(model, config.adapter, source)
    return ClipBundle(model=model, tokenizer=tokenizer, image=image)
