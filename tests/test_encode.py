"""qlora_clip/backbones/encode.py: padding class prompts to the longest prompt (ClassPrompts) gives the logits of
CLIP-LoRA's 77-token padding.

CLIP's text tower is causal and pools at the end-of-text token, so tokens after it cannot change
the features. These tests check that on the real model code with adapters that are not zero.
"""
import pytest
import torch
from adapted_models import tiny_with_nonzero_adapters

from qlora_clip.backbones.encode import ClassPrompts, image_features
from qlora_clip.paper import LOGIT_SCALE

CLASSNAMES = ["cat", "dog", "sea horse", "windsor chair", "brontosaurus", "yin yang", "x"]


def _model(mode: str):
    return tiny_with_nonzero_adapters(mode, 0.5)


def _full_context(tokenizer, prompts, with_mask: bool) -> ClassPrompts:
    padded = ClassPrompts(tokenizer, prompts, torch.device("cpu"))
    enc = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    padded.input_ids = enc["input_ids"]
    # CLIP-LoRA's clip.tokenize passes no padding mask at all (causal mask only); test both.
    padded.attention_mask = enc["attention_mask"] if with_mask else torch.ones_like(enc["attention_mask"])
    return padded


@pytest.mark.parametrize("mode", ["lora", "qlora", "dora"])
@pytest.mark.parametrize("with_mask", [True, False])
@torch.no_grad()
def test_longest_padding_gives_the_77_token_logits(mode, with_mask):
    adapted = _model(mode)
    model, bundle = adapted.model.eval(), adapted.bundle
    prompts = [f"a photo of a {name}." for name in CLASSNAMES]
    longest = ClassPrompts(bundle.tokenizer, prompts, torch.device("cpu"))
    full = _full_context(bundle.tokenizer, prompts, with_mask)
    lengths = longest.attention_mask.sum(1)
    assert longest.input_ids.shape[1] == lengths.max()  # padded to the longest prompt
    assert lengths.max() < 77  # really shorter than the context
    assert lengths.min() < lengths.max()  # and prompts differ in length

    images = torch.randn(5, 3, bundle.image.image_size, bundle.image.image_size, generator=torch.Generator().manual_seed(1))
    image = image_features(model, images)
    logits_longest = LOGIT_SCALE * image @ longest.features(model).T
    logits_full = LOGIT_SCALE * image @ full.features(model).T
    with model.disable_adapter():
        logits_zero_shot = LOGIT_SCALE * image @ longest.features(model).T

    assert not torch.allclose(logits_longest, logits_zero_shot, atol=1e-3)  # adapters do matter here
    torch.testing.assert_close(logits_longest, logits_full, rtol=0, atol=1e-4)
    assert torch.equal(logits_longest.argmax(1), logits_full.argmax(1))
