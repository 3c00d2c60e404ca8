"""qlora_clip/backbones/loading.py and methods/interface.load_adapted: the backbone a flag names, and adapters on
exactly the requested modules, with the requested method, scale and precision."""
from __future__ import annotations

import math
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from peft import get_peft_model
from transformers import CLIPConfig, CLIPModel

import main
from qlora_clip.backbones.families import CLIP
from qlora_clip.backbones.loading import resolve_backbone
from qlora_clip.backbones.targets import position_layers, target_module_names
from qlora_clip.errors import UserError
from qlora_clip.methods.interface import Adapted, load_adapted
from qlora_clip.methods.peft_tuners import peft_config
from qlora_clip.methods.settings import AdapterConfig
from run_utils import parse_args, run_spec

CPU = torch.device("cpu")


def b16_config() -> CLIPConfig:
    """ViT-B/16's shapes (no weights needed: the model is built on the meta device)."""
    return CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8, vocab_size=49408),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=224, patch_size=16),
        projection_dim=512,
    )


def adapted_tiny(*flags: str, dtype: torch.dtype = torch.float32) -> Adapted:
    """The tiny model with the method main.py's `flags` describe, loaded as main.py loads it."""
    spec = run_spec(parse_args(["--backbone", "tiny", *flags]))
    return load_adapted(spec.backbone, spec.adapter, CPU, dtype, spec.model.gradient_checkpointing)


def adapted_module_names(model) -> list[str]:
    prefix = "base_model.model."
    return sorted(name[len(prefix):] for name, module in model.named_modules()
                  if hasattr(module, "lora_A") and len(module.lora_A))


@pytest.mark.parametrize("position, layers", [
    ("bottom", [0, 1, 2, 3]), ("mid", [4, 5, 6, 7]), ("up", [8, 9, 10, 11]),
    ("half-up", [6, 7, 8, 9, 10, 11]), ("half-bottom", [0, 1, 2, 3, 4, 5]),
    ("all", list(range(12))), ("top", [11]), ("top3", [9, 10, 11]),
])
def test_positions_of_12_layer_encoders_match_clip_lora(position, layers):
    assert position_layers(position, 12) == layers


def test_positions_of_24_layer_vision_tower():
    assert position_layers("half-bottom", 24) == list(range(12))
    assert position_layers("half-up", 24) == list(range(12, 24))
    assert position_layers("all", 24) == list(range(24))


def test_vit_b16_shapes_give_the_published_trainable_count():
    config = b16_config()
    with torch.device("meta"):
        model = CLIPModel(config)
    args = parse_args([])
    names = target_module_names(CLIP, config, "both", "all", args.params)
    assert names == AdapterConfig().targets(CLIP, config)  # what a run at the defaults adapts
    peft_model = get_peft_model(model, peft_config(AdapterConfig(), names))
    # text 12 x 3 x 2 x (512+512) + vision 12 x 3 x 2 x (768+768)
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == 184_320


@pytest.mark.parametrize("flags, towers, layers, projections", [
    ([], ("text_model", "vision_model"), range(6), ("q_proj", "k_proj", "v_proj")),
    (["--encoder", "vision"], ("vision_model",), range(6), ("q_proj", "k_proj", "v_proj")),
    (["--encoder", "text", "--position", "top"], ("text_model",), [5], ("q_proj", "k_proj", "v_proj")),
    (["--position", "bottom", "--params", "q", "o"], ("text_model", "vision_model"), [0, 1], ("q_proj", "out_proj")),
    (["--position", "half-up", "--params", "v"], ("text_model", "vision_model"), [3, 4, 5], ("v_proj",)),
])
def test_adapters_sit_on_exactly_the_requested_modules(flags, towers, layers, projections):
    adapted = adapted_tiny(*flags)
    expected = sorted(f"{t}.encoder.layers.{i}.self_attn.{p}" for t in towers for i in layers for p in projections)
    assert adapted_module_names(adapted.model) == expected
    # tiny: every projection is 64 x 64, so each adapter has r x (64 + 64) weights
    assert adapted.trainable_parameters() == len(expected) * 2 * (64 + 64)


def test_rank_changes_the_adapter_size():
    r2 = adapted_tiny()
    r8 = adapted_tiny("--r", "8")
    assert r8.trainable_parameters() == 4 * r2.trainable_parameters()


@pytest.mark.parametrize("scaling, expected", [("rslora", 4 / math.sqrt(8)), ("standard", 4 / 8)])
def test_lora_scaling(scaling, expected):
    model = adapted_tiny("--r", "8", "--alpha", "4", "--lora_scaling", scaling).model
    layer = model.base_model.model.vision_model.encoder.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(expected)


def test_dropout_rate_reaches_the_adapter():
    model = adapted_tiny("--dropout_rate", "0.1").model
    layer = model.base_model.model.text_model.encoder.layers[0].self_attn.k_proj
    assert layer.lora_dropout["default"].p == pytest.approx(0.1)


def test_adapter_starts_as_identity():
    """B is zero at init: the adapted model equals the frozen one (zero-shot CLIP)."""
    model = adapted_tiny().model
    layer = model.base_model.model.vision_model.encoder.layers[2].self_attn.v_proj
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0
    assert torch.count_nonzero(layer.lora_A["default"].weight) > 0


@pytest.mark.parametrize("mode", ["dora", "qdora"])
def test_dora_modes_add_magnitude_vectors(mode):
    adapted = adapted_tiny("--mode", mode)
    magnitudes = [n for n, p in adapted.model.named_parameters() if "lora_magnitude_vector" in n and p.requires_grad]
    assert len(magnitudes) == 36  # one per adapted projection: 2 towers x 6 layers x q,k,v
    assert adapted.trainable_parameters() == 36 * (2 * 128 + 64)


@pytest.mark.parametrize("mode", ["qlora", "qdora"])
def test_quantized_modes_have_an_nf4_base_with_a_smaller_footprint(mode):
    full = adapted_tiny("--mode", "lora")
    quantized = adapted_tiny("--mode", mode)
    layers = [m for m in quantized.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers, "no 4-bit layers"
    state = layers[0].weight.quant_state
    assert state.quant_type == "nf4"
    assert state.nested  # double quantization
    assert all(layer.weight.dtype == torch.uint8 for layer in layers)
    assert quantized.footprint_bytes() < 0.6 * full.footprint_bytes()
    assert quantized.adapter_parameters() == full.adapter_parameters() + (36 * 64 if mode == "qdora" else 0)


def test_lora_base_is_stored_in_the_compute_dtype_and_adapters_in_fp32():
    model = adapted_tiny(dtype=torch.bfloat16).model
    layer = model.base_model.model.vision_model.encoder.layers[0].self_attn.q_proj
    assert layer.base_layer.weight.dtype == torch.bfloat16
    assert layer.lora_A["default"].weight.dtype == torch.float32


@pytest.mark.parametrize("mode", ["lora", "qlora"])
def test_gradient_checkpointing_flag_turns_it_on_without_changing_gradients(mode):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    grads = {}
    for flags in ([], ["--gradient_checkpointing"]):
        torch.manual_seed(0)
        model = adapted_tiny("--mode", mode, "--dropout_rate", "0", *flags).model
        assert model.base_model.model.vision_model.encoder.gradient_checkpointing == bool(flags)
        model.train()
        for p in model.parameters():
            if p.requires_grad:
                p.data.normal_(0, 0.05)  # non-zero B so every adapter gets a gradient
        model.get_image_features(pixel_values=images).pooler_output.sum().backward()
        vision = [p for n, p in model.named_parameters() if p.requires_grad and "vision_model" in n]
        grads[bool(flags)] = torch.cat([p.grad.flatten() for p in vision])
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-4, atol=1e-6)


def test_backbone_aliases_resolve_to_openai_hub_ids():
    assert resolve_backbone("ViT-B/16") == "openai/clip-vit-base-patch16"
    assert resolve_backbone("ViT-B/32") == "openai/clip-vit-base-patch32"
    assert resolve_backbone("ViT-L/14") == "openai/clip-vit-large-patch14"
    assert resolve_backbone("someone/their-clip") == "someone/their-clip"
    assert (Path(resolve_backbone("tiny")) / "model.safetensors").exists()


def test_missing_local_backbone_folder_is_named(tiny_argv, tmp_path):
    with pytest.raises(UserError, match=r"--backbone .*no such checkpoint folder"):
        main.main(tiny_argv("--backbone", str(tmp_path / "nope")))


def test_unreachable_hub_model_points_to_tiny(tiny_argv):
    # HF_HUB_OFFLINE=1 (conftest) makes the failed fetch immediate instead of retried.
    with pytest.raises(UserError, match=r"--backbone ViT-B/16 \(openai/clip-vit-base-patch16\): could not read its config.json .*offline one: tiny"):
        main.main(tiny_argv("--backbone", "ViT-B/16"))


@pytest.mark.parametrize("mode", ["qlora", "qdora"])
def test_both_projections_stay_in_full_precision_in_the_4bit_modes(mode):
    adapted = load_adapted("tiny", AdapterConfig(mode), CPU, torch.float32)
    model = adapted.model.base_model.model
    # The 4-bit loader's skip list is the family's (CLIP's, for the tiny checkpoint): both projections.
    assert adapted.bundle.family.full_precision == ("visual_projection", "text_projection")
    for name in adapted.bundle.family.full_precision:
        layer = getattr(model, name)
        assert type(layer) is torch.nn.Linear, name
        assert layer.weight.dtype == torch.float32, name
    assert isinstance(model.vision_model.encoder.layers[0].mlp.fc1, bnb.nn.Linear4bit)


def test_the_loaded_model_uses_pytorch_sdpa_attention():
    model = load_adapted("tiny", AdapterConfig("lora"), CPU, torch.float32).model
    assert model.base_model.model.config._attn_implementation == "sdpa"
