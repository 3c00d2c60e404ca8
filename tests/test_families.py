"""qlora_clip/backbones/families.py: a checkpoint's family from its config.json, the family table, and the refusals.

Every family's tiny checkpoint is detected as its family and gets the family's tokenizer, text rules,
image resize, target modules and 4-bit skip list; an unsupported or incomplete checkpoint stops
before any weights load, naming the folder or id and what is supported.
"""
from __future__ import annotations

import json
import shutil
import sys

import bitsandbytes as bnb
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import CLIPVisionConfig, Siglip2Config, SiglipModel, ViTConfig

import main
from qlora_clip.backbones import loading
from qlora_clip.backbones import families
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.families import CHECKPOINT_SCALE_AND_BIAS, FAMILIES, FIXED_SCALE, family_of, hub_id
from qlora_clip.backbones.loading import resolve_backbone
from qlora_clip.backbones.targets import target_module_names
from qlora_clip.backbones.tiny_backbones import TINY_NAMES
from qlora_clip.errors import UserError
from qlora_clip.inputs.test_images import cache_key
from qlora_clip.methods.interface import Adapted, load_adapted
from qlora_clip.methods.settings import AdapterConfig

CPU = torch.device("cpu")
EXPECTED = {"tiny": "clip", "tiny-siglip": "siglip", "tiny-siglip2": "siglip2", "tiny-metaclip2": "metaclip_2"}


def tiny(backbone: str, mode: str = "lora") -> Adapted:
    return load_adapted(backbone, AdapterConfig(mode=mode), CPU, torch.float32)


def copy_without(backbone: str, tmp_path, *names: str):
    folder = tmp_path / backbone
    shutil.copytree(resolve_backbone(backbone), folder)
    for name in names:
        (folder / name).unlink()
    return folder


# --- detection and the table ----------------------------------------------------------------------

@pytest.mark.parametrize("backbone", TINY_NAMES)
def test_each_tiny_checkpoint_is_its_family_with_the_familys_tokenizer_and_resize(backbone):
    family = family_of(resolve_backbone(backbone), backbone)
    assert family.name == EXPECTED[backbone]
    assert family.tiny == backbone
    adapted = tiny(backbone)
    bundle = adapted.bundle
    assert bundle.family is family
    assert type(adapted.model.get_base_model()).__name__ == family.model_class
    tokenizer = {"clip": "CLIPTokenizer", "siglip": "SiglipTokenizer", "siglip2": "GemmaTokenizer",
                 "metaclip_2": "XLMRobertaTokenizer"}[family.name]
    assert type(bundle.tokenizer).__name__ == tokenizer
    assert bundle.image.center_crop == (family.name in ("clip", "metaclip_2"))


def test_the_table_says_what_differs():
    assert [f.padding for f in FAMILIES.values()] == ["longest", "max_length", "max_length", "longest"]
    assert [f.pooled_at_end_of_text for f in FAMILIES.values()] == [True, False, False, True]
    assert [f.logit_rule for f in FAMILIES.values()] == [FIXED_SCALE, CHECKPOINT_SCALE_AND_BIAS,
                                                         CHECKPOINT_SCALE_AND_BIAS, FIXED_SCALE]
    assert FAMILIES["siglip"].losses == ("ce", "sigmoid")
    assert FAMILIES["siglip2"].losses == ("ce", "sigmoid")
    assert FAMILIES["clip"].losses == ("ce",)
    assert FAMILIES["metaclip_2"].losses == ("ce",)
    assert FAMILIES["siglip"].template == "This is a photo of {}."
    assert FAMILIES["clip"].template == "a photo of a {}."
    assert FAMILIES["siglip2"].lowercase
    assert not FAMILIES["siglip"].lowercase  # SiglipTokenizer lowercases itself


def test_aliases_name_hub_ids_of_listed_families():
    assert hub_id("SigLIP-B/16") == "google/siglip-base-patch16-224"
    assert resolve_backbone("SigLIP-B/16") == "google/siglip-base-patch16-224"
    assert hub_id("ViT-B/16") == "openai/clip-vit-base-patch16"
    assert hub_id("org/model") == "org/model"
    assert {family for _, family in families.ALIASES.values()} == set(FAMILIES)
    for alias in ("SigLIP-B/16", "SigLIP2-B/16", "MetaCLIP2-B/16", "OpenCLIP-B/32-laion2b"):
        assert alias in families.aliases_help()


def test_a_clip_format_checkpoint_with_gelu_is_the_clip_family(tmp_path):
    """LAION / DataComp / MetaCLIP v1 checkpoints are CLIPModel checkpoints whose MLPs use gelu."""
    folder = tmp_path / "gelu"
    shutil.copytree(resolve_backbone("tiny"), folder)
    config = json.loads((folder / "config.json").read_text())
    for tower in ("text_config", "vision_config"):
        config[tower]["hidden_act"] = "gelu"
    (folder / "config.json").write_text(json.dumps(config))
    adapted = tiny(str(folder))
    assert adapted.bundle.family.name == "clip"
    assert adapted.model.config.text_config.hidden_act == "gelu"


# --- text rules -----------------------------------------------------------------------------------

def test_siglip_prompts_are_padded_to_the_fixed_length_without_a_mask_and_clips_to_the_longest():
    prompts = ["This is a photo of a cat.", "This is a photo of a windsor chair."]
    siglip = tiny("tiny-siglip").bundle
    encoded = ClassPrompts(siglip.tokenizer, prompts, CPU, text=siglip.text)
    assert encoded.input_ids.shape == (2, 64)
    assert siglip.text.max_length == 64
    assert encoded.attention_mask is None
    clip = tiny("tiny").bundle
    encoded = ClassPrompts(clip.tokenizer, prompts, CPU, text=clip.text)
    assert encoded.input_ids.shape[1] == encoded.attention_mask.sum(1).max()
    assert encoded.input_ids.shape[1] < 77


def test_siglip2_prompts_are_lowercased_as_it_was_trained():
    bundle = tiny("tiny-siglip2").bundle
    upper = ClassPrompts(bundle.tokenizer, ["A Photo of a CAT."], CPU, text=bundle.text)
    lower = ClassPrompts(bundle.tokenizer, ["a photo of a cat."], CPU, text=bundle.text)
    assert torch.equal(upper.input_ids, lower.input_ids)
    assert bundle.tokenizer("A")["input_ids"] != bundle.tokenizer("a")["input_ids"]  # Gemma's is case-sensitive


# --- target modules and 4-bit ---------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["tiny-siglip", "tiny-metaclip2"])
def test_params_map_to_the_encoder_layers_and_never_to_siglips_pooling_head(backbone):
    family = FAMILIES[EXPECTED[backbone]]
    model = family.model_class_object().from_pretrained(resolve_backbone(backbone))
    names = target_module_names(family, model.config, "both", "all", ["q", "k", "v", "o"])
    assert len(names) == 2 * 6 * 4
    assert not any(".head" in name for name in names)
    modules = dict(model.named_modules())
    assert all(isinstance(modules[name], torch.nn.Linear) for name in names)
    assert target_module_names(family, model.config, "vision", "top", ["o"]) == [
        "vision_model.encoder.layers.5.self_attn.out_proj"]


def test_peft_cannot_adapt_siglips_attention_head_with_dora():
    """Why --params does not reach vision_model.head.attention: PEFT adapts an nn.MultiheadAttention only
    whole and not with DoRA, so LoRA and DoRA runs would adapt different modules."""
    model = SiglipModel.from_pretrained(resolve_backbone("tiny-siglip"))
    assert isinstance(model.vision_model.head.attention, torch.nn.MultiheadAttention)
    with pytest.raises(ValueError, match="does not support DoRA"):
        get_peft_model(model, LoraConfig(target_modules=["vision_model.head.attention"], use_dora=True))


@pytest.mark.parametrize("backbone", ["tiny-siglip", "tiny-metaclip2"])
def test_4bit_keeps_the_familys_projections_and_heads_in_full_precision(backbone):
    model = tiny(backbone, "qlora").model.get_base_model()
    quantized = {name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    assert "text_model.encoder.layers.0.mlp.fc1" in quantized
    assert "vision_model.encoder.layers.5.mlp.fc2" in quantized
    kept = FAMILIES[EXPECTED[backbone]].full_precision
    assert not any(name == k or name.startswith(k + ".") for name in quantized for k in kept)
    for name in kept:
        assert model.get_submodule(name).state_dict()  # present, and full precision
    if backbone == "tiny-siglip":
        assert model.logit_scale.dtype == torch.float32
        assert model.logit_bias.dtype == torch.float32
        assert model.logit_bias.item() == pytest.approx(-10.0)


def test_square_and_cropped_test_images_never_share_a_cache_file():
    assert cache_key("dtd", [], 224, 224, center_crop=True) != cache_key("dtd", [], 224, 224, center_crop=False)


# --- refusals -------------------------------------------------------------------------------------

def write_config(folder, config) -> str:
    config.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("config, message", [
    (ViTConfig(), "a 'vit' checkpoint without both a text and a vision tower"),
    (CLIPVisionConfig(), "a 'clip_vision_model' checkpoint without both a text and a vision tower"),
    (Siglip2Config(), "a NaFlex SigLIP 2 checkpoint"),
])
def test_single_tower_and_naflex_checkpoints_are_refused_naming_the_folder(config, message, tmp_path):
    folder = write_config(tmp_path / "ckpt", config)
    with pytest.raises(UserError, match=message) as error:
        family_of(folder, folder)
    assert folder in str(error.value)
    assert "Supported:" in str(error.value)


def test_an_unknown_model_type_is_refused_with_what_is_supported(tmp_path):
    folder = tmp_path / "blip"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "blip", "text_config": {}, "vision_config": {}}))
    with pytest.raises(UserError, match=r"--backbone .*blip: unsupported model type 'blip'. Supported: CLIP-format"):
        family_of(str(folder), str(folder))


def test_a_folder_without_config_and_an_unreachable_hub_id_are_refused(tmp_path):
    with pytest.raises(UserError, match="has no readable config.json"):
        family_of(str(tmp_path), str(tmp_path))
    with pytest.raises(UserError, match=r"--backbone nobody/no-such-model: could not read its config.json.*tiny"):
        family_of("nobody/no-such-model", "nobody/no-such-model")


def test_a_missing_tokenizer_stops_before_any_weights_load(tmp_path):
    siglip = copy_without("tiny-siglip", tmp_path, "spiece.model", "tokenizer_config.json")
    with pytest.raises(UserError, match=r"a SigLIP checkpoint without its tokenizer .* needs spiece.model"):
        family_of(str(siglip), "x")
    # No tokenizer and no weights: the tokenizer's absence is what is reported, so it was checked first.
    clip = copy_without("tiny", tmp_path, "tokenizer.json", "tokenizer_config.json", "model.safetensors")
    with pytest.raises(UserError, match=r"no usable tokenizer .* a CLIP checkpoint needs vocab.json and merges.txt"):
        tiny(str(clip))
    processor = copy_without("tiny-metaclip2", tmp_path, "preprocessor_config.json", "model.safetensors")
    with pytest.raises(UserError, match="has no preprocessor_config.json"):
        tiny(str(processor))


@pytest.mark.parametrize("backbone", TINY_NAMES)
def test_a_folder_saved_by_todays_transformers_reads_its_image_settings(backbone, tmp_path):
    # transformers 5's Processor.save_pretrained writes the image settings into processor_config.json.
    from transformers import AutoProcessor

    folder = copy_without(backbone, tmp_path, "preprocessor_config.json")
    AutoProcessor.from_pretrained(resolve_backbone(backbone)).save_pretrained(folder)
    assert (folder / "processor_config.json").is_file()
    assert not (folder / "preprocessor_config.json").exists()
    source = resolve_backbone(backbone)
    assert families.image_settings(str(folder), str(folder)) == families.image_settings(source, backbone)


def test_a_run_on_a_folder_saved_by_todays_transformers_equals_the_runs_on_the_original(tiny_argv, tmp_path):
    from transformers import CLIPProcessor

    folder = copy_without("tiny", tmp_path, "preprocessor_config.json")
    CLIPProcessor.from_pretrained(resolve_backbone("tiny")).save_pretrained(folder)
    saved = main.main(tiny_argv("--backbone", str(folder), "--n_iters", "0"))
    original = main.main(tiny_argv("--n_iters", "0"))
    assert saved["zero_shot_acc"] == original["zero_shot_acc"]


def test_main_refuses_an_unsupported_backbone_before_loading_any_weights(tmp_path, monkeypatch, capsys,
                                                                         color_folder):
    folder = write_config(tmp_path / "vit", ViTConfig())

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded for an unsupported checkpoint")

    monkeypatch.setattr(loading, "load_base_model", no_weights)
    monkeypatch.setattr(sys, "argv", ["main.py", "--backbone", folder, "--dataset", "folder", "--root_path",
                                      str(color_folder), "--results_file", str(tmp_path / "r.jsonl")])
    assert main.cli() == 2
    err = capsys.readouterr().err
    assert f"error: --backbone {folder}: a 'vit' checkpoint without both a text and a vision tower" in err
    assert not (tmp_path / "r.jsonl").exists()


def test_the_sigmoid_loss_is_refused_for_clip_families(tiny_argv, tmp_path):
    with pytest.raises(UserError, match=r"--loss sigmoid: .* --backbone tiny-metaclip2 is a MetaCLIP 2 checkpoint, "
                                        r"which allows ce"):
        main.main(tiny_argv("--backbone", "tiny-metaclip2", "--loss", "sigmoid"))
    assert not (tmp_path / "results.jsonl").exists()
