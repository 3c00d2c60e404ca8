"""qlora_clip/run/export.py: --merge_export writes a plain CLIPModel that computes what the adapted model does."""
from __future__ import annotations

from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from transformers import CLIPModel

import main
from datasets import build_dataset
from qlora_clip.backbones.encode import ClassPrompts, image_features
from qlora_clip.backbones.loading import resolve_backbone
from qlora_clip.evaluation.evaluator import EvalSet, EvalSettings, Evaluator, build_eval_set
from qlora_clip.methods.interface import Adapted, load_adapted
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.run.export import export_merged
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.precision import resolve_precision
from run_utils import parse_args, run_spec

CPU = torch.device("cpu")


@pytest.mark.parametrize("mode", ["lora", "qlora", "qdora"])
def test_merged_export_is_a_plain_clip_with_the_adapters_outputs(mode, tiny_argv, tmp_path, color_folder):
    export = tmp_path / "merged"
    record = main.main(tiny_argv("--mode", mode, "--lr", "2e-2", "--n_iters", "2", "--merge_export", str(export),
                                 "--save_path", str(tmp_path / "ckpt")))
    assert record["merge_export"] == str(export)
    assert not (export / "adapter_config.json").exists()
    merged = CLIPModel.from_pretrained(export)  # nothing but transformers
    assert not any("lora" in name for name, _ in merged.named_parameters())

    args = parse_args(tiny_argv("--mode", mode, "--save_path", str(tmp_path / "ckpt"), "--eval_only"))
    spec = run_spec(args)
    data = build_dataset(args.dataset, args.root_path, args.shots, args.seed)
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32, saved=Path(record["adapter_dir"]))
    prompts = ClassPrompts(adapted.bundle.tokenizer, data.prompts(), CPU)
    settings = EvalSettings(adapted.bundle.image, 64, None, 0, Distributed(rank=0, world=1, device=CPU))
    test = build_eval_set("folder", data.test, data.load_image, prompts, settings)
    images = next(iter(test.loader))[0]
    adapted.model.eval()
    with torch.no_grad():
        with_adapter = image_features(adapted.model, images) @ prompts.features(adapted.model).T
        plain = image_features(merged, images) @ prompts.features(merged).T
    if mode != "lora":  # a 4-bit base: computed through different layers, so not bit for bit
        assert (with_adapter - plain).abs().max() > 0
    torch.testing.assert_close(plain, with_adapter, rtol=1e-4, atol=1e-4)
    fp32 = resolve_precision("fp32", CPU)
    # The merged model evaluated as a plain model: the interface's defaults (its features, the family's logits).
    as_plain = Adapted(adapted.bundle, spec.adapter, merged)
    assert Evaluator(as_plain, fp32).accuracy(EvalSet("folder", test.loader, prompts)) == record["test_acc"]


# --- export_merged on its own ----------------------------------------------------------------------

def adapted_with_a_nonzero_update(mode: str) -> Adapted:
    """The tiny CLIP with `mode`'s adapters, their B matrices random (at init B is zero: nothing to merge)."""
    adapted = load_adapted("tiny", AdapterConfig(mode), CPU, torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in adapted.model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return adapted


def lora_update(layer) -> torch.Tensor:
    return layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight


def test_a_lora_layer_is_merged_into_base_plus_its_scaled_update(tmp_path):
    adapted = adapted_with_a_nonzero_update("lora")
    layer = adapted.model.base_model.model.vision_model.encoder.layers[1].self_attn.v_proj
    expected = layer.base_layer.weight.detach() + lora_update(layer).detach()
    export_merged(adapted, resolve_backbone("tiny"), tmp_path / "merged")
    merged = CLIPModel.from_pretrained(tmp_path / "merged")
    weight = merged.vision_model.encoder.layers[1].self_attn.v_proj.weight
    assert lora_update(layer).abs().max() > 1e-3  # the update is not negligible
    torch.testing.assert_close(weight, expected, rtol=0, atol=1e-6)
    untouched = merged.vision_model.encoder.layers[1].mlp.fc1.weight  # no adapter there
    assert torch.equal(untouched, adapted.model.base_model.model.vision_model.encoder.layers[1].mlp.fc1.weight)
    assert not (tmp_path / "merged" / "README.md").exists()  # a model card only with the run's record


def test_a_4bit_base_is_merged_into_its_dequantized_weights_not_the_original_ones(tmp_path):
    adapted = adapted_with_a_nonzero_update("qlora")
    layers = adapted.model.base_model.model.text_model.encoder.layers[0]
    q_proj, fc1 = layers.self_attn.q_proj, layers.mlp.fc1
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    assert isinstance(fc1, bnb.nn.Linear4bit)

    def dequantized(layer) -> torch.Tensor:
        return bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()

    export_merged(adapted, resolve_backbone("tiny"), tmp_path / "merged")
    merged = CLIPModel.from_pretrained(tmp_path / "merged").text_model.encoder.layers[0]
    original = CLIPModel.from_pretrained(resolve_backbone("tiny")).text_model.encoder.layers[0]
    assert merged.self_attn.q_proj.weight.dtype == torch.float32
    torch.testing.assert_close(merged.self_attn.q_proj.weight,
                               dequantized(q_proj.base_layer) + lora_update(q_proj).detach(), rtol=0, atol=1e-6)
    assert torch.equal(merged.mlp.fc1.weight, dequantized(fc1))  # quantized, no adapter: the 4-bit values
    # The 4-bit rounding is kept, not undone by the checkpoint's full-precision weights.
    assert (merged.mlp.fc1.weight - original.mlp.fc1.weight).abs().max() > 1e-4
