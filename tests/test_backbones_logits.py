"""Each family's zero-shot logits, through our pipeline, equal its own Hugging Face model's on the same inputs.

Ours: our tokenisation (ClassPrompts with the family's text rules), our preprocessing of PIL images
(eval_transform, the uint8 test-image path), our features and the family's logits. Theirs: the
family's model class called on its processor's output, `logits_per_image`, with the settings the
family's model card gives (SigLIP: padded to the fixed length, no padding mask; SigLIP 2 also
lowercased). The image processor is its PIL backend, which our transform reproduces exactly; the
torchvision backend, transformers' default, resamples with torch's kernel: on these noise images
it is within half a grey level of ours on average (up to 8 levels at single pixels).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer

from qlora_clip.backbones.encode import ClassPrompts, image_features
from qlora_clip.backbones.loading import resolve_backbone
from qlora_clip.backbones.tiny_backbones import TINY_NAMES
from qlora_clip.inputs.loaders import eval_transform, to_model_input
from qlora_clip.methods.interface import Adapted, load_adapted
from qlora_clip.methods.settings import AdapterConfig

CPU = torch.device("cpu")
PROMPTS = ["This is a photo of a Sea horse.", "a photo of a dog", "Windsor chair, in a photo.", "x"]
# Sizes whose centre-crop margins are even after CLIP's shorter-side resize to 32: torchvision's
# CenterCrop (CLIP-LoRA's, ours) rounds an odd margin's half to even, transformers truncates it, a
# one-pixel shift of the crop. SigLIP's resize to the square has no crop.
SIZES = [(64, 48), (40, 70), (100, 50), (32, 32)]


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


def hf_inputs(bundle, source: str, backend: str) -> dict:
    """The family's processor on PROMPTS and images(), with its model card's text settings."""
    family = bundle.family
    processor = getattr(transformers, family.processor_class)(
        image_processor=AutoImageProcessor.from_pretrained(source, backend=backend),
        tokenizer=AutoTokenizer.from_pretrained(source))
    prompts = [p.lower() for p in PROMPTS] if family.lowercase else PROMPTS
    if family.padding == "max_length":
        inputs = processor(text=prompts, images=images(), return_tensors="pt", padding="max_length",
                           max_length=bundle.text.max_length)
        inputs.pop("attention_mask", None)
        return inputs
    return processor(text=prompts, images=images(), return_tensors="pt", padding=True)


def load(backbone: str) -> Adapted:
    """The backbone with fresh LoRA adapters, in fp32 on the CPU."""
    return load_adapted(backbone, AdapterConfig(), CPU, torch.float32)


def ours(adapted: Adapted) -> tuple[torch.Tensor, torch.Tensor, ClassPrompts]:
    """(logits, pixel values, prompts) through our own pipeline."""
    bundle = adapted.bundle
    transform = eval_transform(bundle.image)
    pixels = torch.stack([transform(image) for image in images()])
    pixel_values = to_model_input(pixels, CPU, bundle.image)
    prompts = ClassPrompts(bundle.tokenizer, PROMPTS, CPU, text=bundle.text)
    model = adapted.model
    with torch.no_grad(), adapted.zero_shot_view():
        logits = bundle.family.logits(model)(image_features(model, pixel_values), prompts.features(model))
    return logits, pixel_values, prompts


@pytest.mark.parametrize("backbone", TINY_NAMES)
def test_zero_shot_logits_equal_the_families_own_model(backbone):
    source = resolve_backbone(backbone)
    adapted = load(backbone)
    bundle = adapted.bundle
    adapted.model.eval()
    logits, pixel_values, prompts = ours(adapted)
    inputs = hf_inputs(bundle, source, "pil")

    assert torch.equal(prompts.input_ids, inputs["input_ids"])
    torch.testing.assert_close(pixel_values, inputs["pixel_values"], rtol=0, atol=1e-6)
    reference = bundle.family.model_class_object().from_pretrained(source).eval()
    with torch.no_grad():
        theirs = reference(**inputs).logits_per_image
    torch.testing.assert_close(logits, theirs, rtol=0, atol=1e-5)
    assert logits.std() > 1e-3  # not a degenerate comparison


@pytest.mark.parametrize("backbone", ["tiny", "tiny-siglip"])
def test_the_default_torchvision_processor_is_within_half_a_grey_level_of_ours_on_average(backbone):
    source = resolve_backbone(backbone)
    adapted = load(backbone)
    bundle = adapted.bundle
    _, pixel_values, _ = ours(adapted)
    theirs = hf_inputs(bundle, source, "torchvision")["pixel_values"]
    grey_level = 1 / 255 / torch.tensor(bundle.image.std).view(1, 3, 1, 1)
    levels = (pixel_values - theirs).abs() / grey_level
    assert levels.mean() > 0
    assert levels.mean() <= 0.5
