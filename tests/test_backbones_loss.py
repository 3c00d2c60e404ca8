"""--loss: SigLIP's sigmoid loss against its formula computed by hand, in the trainer's per-image weighting."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from qlora_clip.backbones.encode import ClassPrompts, image_features
from qlora_clip.methods.interface import load_adapted
from qlora_clip.paper import LR
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.run.results import comparable_config
from qlora_clip.run.settings import flag_defaults
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.losses import summed_loss
from qlora_clip.training.precision import resolve_precision
from qlora_clip.training.settings import TrainConfig
from run_utils import parse_run
from trainer import TrainStep

CPU = torch.device("cpu")


def by_hand(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """sum over images and classes of -log sigmoid(z * logit), z = +1 for the true class, -1 otherwise."""
    total = 0.0
    for row, label in zip(logits.tolist(), labels.tolist()):
        for c, logit in enumerate(row):
            z = 1.0 if c == label else -1.0
            total += -math.log(1.0 / (1.0 + math.exp(-z * logit)))
    return total


def test_sigmoid_loss_is_the_one_vs_rest_formula():
    g = torch.Generator().manual_seed(0)
    logits = 8 * torch.randn(5, 7, generator=g) - 4
    labels = torch.tensor([0, 6, 3, 3, 1])
    assert summed_loss("sigmoid", logits, labels).item() == pytest.approx(by_hand(logits, labels), rel=1e-6)
    assert summed_loss("ce", logits, labels).item() == pytest.approx(
        F.cross_entropy(logits, labels, reduction="sum").item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss"):
        summed_loss("hinge", logits, labels)


def siglip_step(loss: str):
    """A tiny SigLIP with non-zero adapters, its prompts, and a TrainStep on `loss` (no dropout)."""
    torch.manual_seed(0)
    adapted = load_adapted("tiny-siglip", AdapterConfig(dropout_rate=0.0), CPU, torch.float32)
    bundle = adapted.bundle
    with torch.no_grad():
        for name, param in adapted.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    prompts = ClassPrompts(bundle.tokenizer, [f"This is a photo of {c}." for c in ("red", "green", "blue", "cat")],
                           CPU, text=bundle.text)
    config = TrainConfig(lr=LR, shots=1, n_iters=1, loss=loss)
    step = TrainStep(adapted, prompts, config, resolve_precision("fp32", CPU), Distributed(rank=0, world=1, device=CPU))
    return adapted, prompts, step


@pytest.mark.parametrize("loss", ["sigmoid", "ce"])
def test_the_step_averages_the_loss_per_image_of_the_whole_step_on_siglips_biased_logits(loss):
    adapted, prompts, step = siglip_step(loss)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(5, 3, 32, 32, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 1])
    model = adapted.model
    with torch.no_grad():
        logits = adapted.bundle.family.logits(model)(image_features(model, images), prompts.features(model))
    assert model.logit_bias.item() == pytest.approx(-10.0)
    assert logits.mean() < -5  # the bias is in the logits
    expected = (by_hand(logits, labels) if loss == "sigmoid"
                else F.cross_entropy(logits, labels, reduction="sum").item()) / 5
    # Micro-batches of 3 and 2 images: each summed loss is divided by the step's 5 images.
    step_loss, _ = step([(images[:3], labels[:3]), (images[3:], labels[3:])], step_images=5)
    assert step_loss.item() == pytest.approx(expected, rel=1e-5)


def test_the_loss_is_part_of_the_runs_identity():
    default = parse_run(["--backbone", "tiny-siglip"])
    sigmoid = parse_run(["--backbone", "tiny-siglip", "--loss", "sigmoid"])
    assert default.variant == "lora"
    assert default.train.loss == "ce"
    assert sigmoid.variant.startswith("lora-losssigmoid-")
    assert sigmoid.train.loss == "sigmoid"
    assert sigmoid.key != default.key
    # A line written before --loss existed is read as a cross-entropy run: the same run as the default.
    older = {k: v for k, v in default.flags.items() if k != "loss"}
    assert comparable_config(older, flag_defaults()) == default.identity
