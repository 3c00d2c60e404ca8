"""qlora_clip/encode.py: padding class prompts to the longest prompt (ClassPrompts) gives the logits of
CLIP-LoRA's 77-token padding.

CLIP's text tower is causal and pools at the end-of-text token, so tokens after it cannot change
the features. These tests check that on the real model code with adapters that are not zero.
"""
import pytest
import torch

from qlora_clip.encode import ClassPrompts, image_features
from qlora_clip.model import load_clip
from qlora_clip.paper import LOGIT_SCALE
from qlora_clip.precision import resolve_precision
from run_utils import parse_args, run_spec

CLASSNAMES = ["cat", "dog", "sea horse", "windsor chair", "brontosaurus", "yin yang", "x"]


def _model(mode: str):
    args = parse_args(["--backbone", "tiny", "--mode", mode, "--encoder", "both", "--device", "cpu"])
    device = torch.device("cpu")
    bundle = load_clip(run_spec(args).model, device, resolve_precision("fp32", device).dtype)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in bundle.model.named_parameters():
            if "lora_B" in name:  # B starts at zero: make the text adapters change the features
                param.copy_(0.5 * torch.randn(param.shape, generator=g))
    return bundle


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
    bundle = _model(mode)
    model = bundle.model.eval()
    prompts = [f"a photo of a {name}." for name in CLASSNAMES]
    longest = ClassPrompts(bundle.tokenizer, prompts, torch.device("cpu"))
    full = _full_context(bundle.tokenizer, prompts, with_mask)
    lengths = longest.attention_mask.sum(1)
    assert longest.input_ids.shape[1] == lengths.max() < 77  # really shorter, and prompts differ in length
    assert lengths.min() < lengths.max()

    images = torch.randn(5, 3, bundle.image.image_size, bundle.image.image_size, generator=torch.Generator().manual_seed(1))
    image = image_features(model, images)
    logits_longest = LOGIT_SCALE * image @ longest.features(model).T
    logits_full = LOGIT_SCALE * image @ full.features(model).T
    with model.disable_adapter():
        logits_zero_shot = LOGIT_SCALE * image @ longest.features(model).T

    assert not torch.allclose(logits_longest, logits_zero_shot, atol=1e-3)  # adapters do matter here
    torch.testing.assert_close(logits_longest, logits_full, rtol=0, atol=1e-4)
    assert torch.equal(logits_longest.argmax(1), logits_full.argmax(1))
