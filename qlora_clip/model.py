"""Loading a Hugging Face CLIP and wrapping it with a PEFT adapter.

LoRA, QLoRA, DoRA and QDoRA are one code path: a `LoraConfig` (with `use_dora` for the DoRA
modes) and, for the Q modes, a 4-bit NF4 base from bitsandbytes.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from safetensors import SafetensorError, safe_open
from transformers import BitsAndBytesConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer, PretrainedConfig

from qlora_clip.compat import keep_cpu_4bit_layout_trainable  # first: quiets bitsandbytes before its import
from qlora_clip.config import AdapterConfig, ImageSettings, ModelConfig
from qlora_clip.errors import UserError
from qlora_clip.paper import BACKBONE_ALIASES
from qlora_clip.tiny_clip import tiny_checkpoint_dir, tiny_checkpoint_path

log = logging.getLogger(__name__)

# The two projections into the shared image-text space stay in full precision in the 4-bit modes.
# Left to itself transformers keeps only the last module it finds (text_projection) and quantizes
# visual_projection; one rule for both keeps the two towers' features equally precise
# (docs/protocol.md, "The 4-bit base"). They are small: 0.6 M weights for ViT-B/16.
FULL_PRECISION_MODULES = ["visual_projection", "text_projection"]
PROJECTION_NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}
TOWERS = {"text": ("text_model",), "vision": ("vision_model",), "both": ("text_model", "vision_model")}
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
    """Full names of the attention projections that get adapters."""
    depth = {"text_model": config.text_config.num_hidden_layers,
             "vision_model": config.vision_config.num_hidden_layers}
    names = []
    for tower in TOWERS[encoder]:
        layers = position_layers(position, depth[tower])
        if not layers:
            raise UserError(f"--position {position} selects no layer of the {depth[tower]}-layer "
                            f"{tower}; choose another position")
        for layer in layers:
            for p in params:
                names.append(f"{tower}.encoder.layers.{layer}.self_attn.{PROJECTION_NAMES[p]}")
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
    adapter = config.adapter
    targets = target_module_names(model.config, adapter.encoder, adapter.position, list(adapter.params))
    peft_config = lora_config(adapter, targets)
    if saved_adapter is not None:
        model = load_adapter(model, saved_adapter, peft_config)
    else:
        model = get_peft_model(model, peft_config)
    return ClipBundle(model=model, tokenizer=tokenizer, image=image)


# Fields of adapter_config.json that must agree with the flags for a saved adapter to be reused.
_CHECKED_FIELDS = {"r": "--r", "lora_alpha": "--alpha", "use_dora": "--mode", "use_rslora": "--lora_scaling"}


def load_adapter(model: CLIPModel, folder: Path, expected: LoraConfig) -> PeftModel:
    config_file = folder / "adapter_config.json"
    weights_file = folder / "adapter_model.safetensors"
    if not (config_file.exists() and weights_file.exists()):
        raise UserError(f"--eval_only: no saved adapter at {folder} (adapter_config.json and "
                        "adapter_model.safetensors expected). Train with the same flags and --save_path "
                        "first, or fix --save_path.")
    saved = _read_adapter_config(config_file)
    for field, flag in _CHECKED_FIELDS.items():
        if getattr(expected, field) != saved.get(field):
            raise UserError(f"--eval_only: the adapter in {folder} was saved with {field}={saved.get(field)}, "
                            f"but the flags ask for {getattr(expected, field)}; pass the {flag} it was trained with.")
    # PEFT shortens target_modules to name suffixes when saving, so the weights say where adapters were.
    try:
        with safe_open(weights_file, framework="pt") as f:
            saved_modules = {key.split(".lora_")[0].removeprefix("base_model.model.") for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise UserError(f"--eval_only: {weights_file} cannot be read ({err}); the file is damaged or cut short: "
                        "save the adapter again (train with --save_path) or restore the file") from err
    if saved_modules != set(expected.target_modules):
        raise UserError(f"--eval_only: the adapter in {folder} sits on {len(saved_modules)} modules, but the "
                        f"flags select {len(expected.target_modules)} other ones; pass the "
                        "--encoder/--position/--params it was trained with.")
    # Our own config, not the saved one: its shortened target list would widen the adapter's reach.
    try:
        return PeftModel.from_pretrained(model, os.fspath(folder), config=expected, is_trainable=False)
    except (SafetensorError, RuntimeError) as err:  # damaged tensors, or shapes of another backbone
        first_line = str(err).splitlines()[0] if str(err) else "no detail"
        raise UserError(f"--eval_only: the adapter in {folder} does not fit this --backbone or is damaged "
                        f"({type(err).__name__}: {first_line}); pass the --backbone it was trained on, or save it "
                        "again") from err


def _read_adapter_config(path: Path) -> dict:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"--eval_only: {path} is not a readable JSON file ({err}); save the adapter again (train "
                        "with --save_path) or restore the file") from err
    if not isinstance(saved, dict):
        raise UserError(f"--eval_only: {path} holds a JSON {type(saved).__name__}, not an adapter configuration; "
                        "save the adapter again (train with --save_path) or restore the file")
    return saved


def trainable_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def adapter_parameter_count(model: torch.nn.Module) -> int:
    """Adapter weights, trainable or not (an --eval_only model has them frozen)."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
