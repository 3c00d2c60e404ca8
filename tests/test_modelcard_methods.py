"""Model cards of every kind of method: they name it, and their loading snippet, run as a user would,
gives our loader's logits (plain PEFT for PEFT methods, PiSSA converted to a LoRA of the pretrained
base; plain transformers + safetensors for BitFit)."""
from __future__ import annotations

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from test_modelcard import our_logits, run_snippet

import main
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.methods.interface import load_adapted
from qlora_clip.methods.table import METHODS
from run_utils import parse_args, run_spec

CPU = torch.device("cpu")


@pytest.mark.parametrize("mode, loader", [("vera", "PeftModel"), ("pissa", "PeftModel"), ("bitfit", "CLIPModel"),
                                          ("ia3-4bit", "PeftModel")])
def test_card_names_the_method_and_its_snippet_loads_it(mode, loader, tiny_argv, tmp_path, color_folder):
    argv = tiny_argv("--mode", mode, "--n_iters", "2", "--save_path", str(tmp_path / "saved"))
    record = main.main(argv)
    args = parse_args(argv)
    folder = run_spec(args).adapter_dir
    card = ModelCard.load(folder / "README.md")
    method = METHODS[mode]
    assert card.data.method == mode
    assert mode in card.data.tags
    assert method.label in card.text
    assert f"| method | {method.label}" in card.text
    assert ("4-bit" in card.data.tags) == method.quantized

    classnames = sorted(p.name for p in color_folder.iterdir() if p.is_dir())
    images = [Image.open(path).convert("RGB") for path in sorted(color_folder.glob("*/00[0-2].png"))]
    plain = run_snippet(card, classnames, images)
    assert type(plain["model"]).__name__ == loader

    spec = run_spec(args)
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32, saved=folder)
    prompts = ClassPrompts(adapted.bundle.tokenizer, [f"a photo of a {name}." for name in classnames], CPU)
    ours = our_logits(adapted, plain["inputs"]["pixel_values"], prompts)
    torch.testing.assert_close(plain["logits"], ours, rtol=1e-4, atol=1e-3)
    assert record["adapter_dir"] == str(folder)
