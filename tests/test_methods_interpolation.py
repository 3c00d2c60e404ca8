"""`Adapted.interpolated(alpha)` (--interpolate, WiSE-FT): alpha 0 gives the zero-shot logits and alpha 1 the trained
ones exactly, for each kind of method that defines it (LoRA, DoRA, PiSSA's rewritten base, PEFT tuners that are not
LoRA, BitFit, full fine-tuning, a 4-bit base, a baseline's head); in between, the model of the interpolated merged
weights; and the methods where nothing lies between refuse it, before anything loads."""
from __future__ import annotations

import copy
import functools

import pytest
import torch

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.loading import load_bundle, open_checkpoint
from qlora_clip.errors import UserError
from qlora_clip.methods.baselines.base import Fitted
from qlora_clip.methods.interface import Adapted, load_adapted
from qlora_clip.methods.table import METHODS
from qlora_clip.training.precision import resolve_precision
from run_utils import parse_run

CPU = torch.device("cpu")
FP32 = resolve_precision("fp32", CPU).dtype
CLASSES = ["red", "green", "blue", "yellow"]


@functools.cache  # one model per method for the file: the tests leave it as they found it
def trained(mode: str, *flags: str) -> Adapted:
    """The tiny model with `mode` on both towers, every trainable tensor moved off its initial value (seeded), as
    training would: at their initial values LoRA's B is zero and IA3's vectors one, which would hide a wrong alpha."""
    spec = parse_run(["--backbone", "tiny", "--mode", mode, "--encoder", "both", "--device", "cpu", *flags])
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, FP32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in adapted.model.parameters():
            if param.requires_grad:
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
    adapted.model.eval()
    return adapted


def inputs(adapted: Adapted) -> tuple[torch.Tensor, ClassPrompts]:
    size = adapted.bundle.image.image_size
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    prompts = ClassPrompts(adapted.bundle.tokenizer, [f"a photo of a {c}." for c in CLASSES], CPU,
                           text=adapted.bundle.text)
    return images, prompts


@torch.no_grad()
def logits(adapted: Adapted, images: torch.Tensor, prompts: ClassPrompts) -> torch.Tensor:
    return adapted.logits(adapted.image_embeddings(images), adapted.text_features(prompts))


# One of each kind: LoRA; DoRA (its magnitude vector makes it no scaled LoRA); PiSSA (the base itself rewritten);
# IA3 and OFT (PEFT tuners of other forms: a scaling vector, a rotation); BitFit and full fine-tuning (our own
# tuners: parameters of the base); QLoRA (the 4-bit base); CLIP-SVD (the singular values of the base's weights).
KINDS = ["lora", "dora", "pissa", "ia3", "oft", "bitfit", "full", "qlora", "clip_svd"]


@pytest.mark.parametrize("mode", KINDS)
def test_alpha_0_is_the_zero_shot_model_and_alpha_1_the_trained_one_exactly(mode):
    adapted = trained(mode)
    images, prompts = inputs(adapted)
    now = logits(adapted, images, prompts)
    with adapted.zero_shot_view():
        zero_shot = logits(adapted, images, prompts)
    assert not torch.allclose(now, zero_shot, atol=1e-3)  # the method changes the logits: the ends are apart
    with adapted.interpolated(0.0):
        assert torch.equal(logits(adapted, images, prompts), zero_shot)
    with adapted.interpolated(1.0):
        assert torch.equal(logits(adapted, images, prompts), now)
    with adapted.interpolated(0.5):
        between = logits(adapted, images, prompts)
    assert not torch.allclose(between, now, atol=1e-3)
    assert not torch.allclose(between, zero_shot, atol=1e-3)
    assert torch.equal(logits(adapted, images, prompts), now)  # closed: the trained model again


def interpolated_weights(adapted: Adapted, alpha: float) -> Adapted:
    """The plain base whose weights are (1 - alpha) W_0 + alpha W_1, W_1 the adapter merged (PEFT's merge)."""
    checkpoint = open_checkpoint("tiny")
    pretrained = load_bundle(checkpoint, False, CPU, FP32)
    merged = adapted.merged(copy.deepcopy(pretrained.model))
    ends = merged.state_dict()
    mixed = {name: (1 - alpha) * value + alpha * ends[name] if value.is_floating_point() else value
             for name, value in pretrained.model.state_dict().items()}
    pretrained.model.load_state_dict(mixed)
    return Adapted(pretrained, adapted.settings)


@pytest.mark.parametrize("mode", ["lora", "dora", "ia3", "oft"])
def test_between_the_model_is_that_of_the_interpolated_merged_weights(mode):
    """WiSE-FT's theta(alpha) = (1 - alpha) theta_0 + alpha theta_1 of the merged weights, computed without merging;
    for DoRA, IA3 and OFT this is not the adapter scaled by alpha (their layers are not linear in it)."""
    adapted = trained(mode)
    images, prompts = inputs(adapted)
    expected = logits(interpolated_weights(adapted, 0.3), images, prompts)
    with adapted.interpolated(0.3):
        got = logits(adapted, images, prompts)
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-5)


def test_bitfit_between_holds_the_interpolated_biases_and_puts_the_trained_ones_back():
    adapted = trained("bitfit")
    params = dict(adapted.model.named_parameters())
    name = next(iter(adapted.originals))
    pretrained, now = adapted.originals[name].clone(), params[name].detach().clone()
    with adapted.interpolated(0.25):
        torch.testing.assert_close(params[name].detach(), 0.75 * pretrained + 0.25 * now)
    assert torch.equal(params[name].detach(), now)


class Head:
    """A baseline's fitted head on the frozen features: fixed logits of its own, independent of the text."""

    def __init__(self, classes: int):
        self.weight = torch.randn(classes, 64, generator=torch.Generator().manual_seed(2))

    def __call__(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return features[:, :64] @ self.weight.T


def test_a_baselines_logits_are_mixed_with_the_zero_shot_ones_exact_at_the_ends():
    spec = parse_run(["--backbone", "tiny", "--mode", "linear_probe", "--device", "cpu"])
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, FP32)
    images, prompts = inputs(adapted)
    with adapted.zero_shot_view():
        zero_shot = logits(adapted, images, prompts)
    adapted.fitted = Fitted(predict=Head(len(CLASSES)), params={})
    fitted = logits(adapted, images, prompts)
    with adapted.interpolated(0.0):
        assert torch.equal(logits(adapted, images, prompts), zero_shot)
    with adapted.interpolated(1.0):
        assert torch.equal(logits(adapted, images, prompts), fitted)
    with adapted.interpolated(0.5):
        torch.testing.assert_close(logits(adapted, images, prompts), (zero_shot + fitted) / 2)
    adapted.fitted.text = lambda p: adapted.text_features(p)  # a classifier of its own text features: refused
    with pytest.raises(UserError, match="--interpolate"), adapted.interpolated(0.5):
        pass


def test_the_default_interface_refuses_interpolation():
    spec = parse_run(["--backbone", "tiny", "--mode", "lora", "--device", "cpu"])
    bundle = load_bundle(open_checkpoint("tiny"), False, CPU, FP32)
    with pytest.raises(UserError, match=r"^--interpolate: --mode lora has no model between"):
        Adapted(bundle, spec.adapter).interpolated(0.5)


@pytest.mark.parametrize("mode", [name for name, m in METHODS.items() if m.interpolation is None])
def test_methods_with_nothing_between_refuse_interpolate_before_anything_loads(mode, capsys):
    """The table says so as data (`refuses`), and the command line refuses it with the reason."""
    with pytest.raises(SystemExit):
        parse_run(["--backbone", "tiny", "--mode", mode, "--interpolate", "0", "1"])
    assert f"--interpolate 0.0 1.0: --mode {mode} " in capsys.readouterr().err


def test_every_method_says_what_interpolation_means_or_refuses_it():
    for method in METHODS.values():
        assert (method.interpolation is None) == ("interpolate" in method.refuses), method.name
    assert {m.name for m in METHODS.values() if m.interpolation is None} >= {"lily", "coop", "zs_ensemble_imagenet"}
