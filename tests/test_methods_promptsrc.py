"""PromptSRC's regularisers and aggregation: the Gaussian weights over epochs sum to 1 and follow the density
(by hand), the prompts after the last epoch are their weighted average; the agreement losses equal their
formulas (L1 means, KL summed over the logits and divided by their number), with the frozen model's features of
the same images; the text reference is the raw features' mean over 60 templates."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from test_methods_training import tiny_batch

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.loading import load_base_model, open_checkpoint
from qlora_clip.methods.interface import StepTensors, load_adapted
from qlora_clip.methods.prompts.promptsrc import (
    TEMPLATES,
    feature_l1,
    gpa_setting,
    gpa_weights,
    logit_kl,
)
from qlora_clip.methods.settings import AdapterConfig

CPU = torch.device("cpu")
NAMES = ["red", "green thing", "blue", "yellow"]
E_HALF = math.exp(-0.5)


def test_gpa_weights_by_hand_sum_to_one_and_follow_the_gaussian():
    # 3 epochs, mean 2, std 1: densities proportional to e^-1/2, 1, e^-1/2
    denom = 1 + 2 * E_HALF
    assert gpa_weights(3, 2.0, 1.0).tolist() == pytest.approx([E_HALF / denom, 1 / denom, E_HALF / denom], abs=1e-15)
    # Base-to-novel: 20 epochs, mean 15, std 1: epoch 15 weighs 1 / sum_{d=-14}^{5} e^{-d^2/2}.
    w = gpa_weights(20, 15.0, 1.0)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-15)
    by_hand = 1 + 2 * sum(math.exp(-d * d / 2) for d in range(1, 6)) + sum(math.exp(-d * d / 2) for d in range(6, 15))
    assert w[14].item() == pytest.approx(1 / by_hand, abs=1e-12)
    assert (w[12] / w[14]).item() == pytest.approx(math.exp(-2), rel=1e-12)
    # Few-shot 30 / 30 over 50 epochs is nearly flat: last / first = exp(-(20^2 - 29^2) / 1800).
    w = gpa_weights(50, 30.0, 30.0)
    assert (w[49] / w[0]).item() == pytest.approx(math.exp(-(400 - 841) / 1800), rel=1e-12)
    # A run much shorter than the mean keeps finite weights (all on its last epoch, nearly).
    assert gpa_weights(2, 15.0, 1.0).tolist() == pytest.approx([0.0, 1.0], abs=1e-5)
    assert (gpa_setting("base2new", "dtd"), gpa_setting("fewshot", "dtd"), gpa_setting("fewshot", "imagenet")) == \
        ((15.0, 1.0), (45.0, 5.0), (30.0, 30.0))


def test_the_l1_and_kl_terms_by_hand():
    # |1 - .6| + |0 - .8| + 0 + 0 = 1.2 (the sum; the loss divides by the 4 elements)
    prompted = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    frozen = torch.tensor([[0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    assert feature_l1(prompted, frozen).item() == pytest.approx(1.2, abs=1e-6)
    # row 1: p = (1/2, 1/2), q = (3/4, 1/4): KL(q || p) = 3/4 ln(3/2) + 1/4 ln(1/2); row 2: 0.
    logits = torch.zeros(2, 2)
    frozen_logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    assert logit_kl(logits, frozen_logits).item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5),
                                                                   abs=1e-6)
    # The direction is frozen -> prompted: the other one is 1/2 ln(2/3) + 1/2 ln 2.
    assert logit_kl(frozen_logits[:1], logits[:1]).item() == pytest.approx(0.5 * math.log(2 / 3) + 0.5 * math.log(2),
                                                                           abs=1e-6)


@pytest.fixture(scope="module")
def promptsrc():
    adapted = load_adapted("tiny", AdapterConfig(mode="promptsrc"), CPU, torch.float32)
    prompts = ClassPrompts(adapted.bundle.tokenizer, [f"a photo of a {n}." for n in NAMES], CPU,
                           classes=SimpleNamespace(classnames=NAMES))
    adapted.initialize([], prompts)
    return adapted, prompts


def test_the_text_reference_is_the_raw_features_mean_over_60_templates(promptsrc):
    adapted, _ = promptsrc
    assert len(set(TEMPLATES)) == 60
    base = load_base_model(open_checkpoint("tiny"), False, CPU, torch.float32)
    expected = []
    with torch.no_grad():
        for name in NAMES:
            batch = ClassPrompts(adapted.bundle.tokenizer, [t.format(name) for t in TEMPLATES], CPU)
            raw = base.get_text_features(input_ids=batch.input_ids, attention_mask=batch.attention_mask).pooler_output
            expected.append(F.normalize(raw.mean(dim=0), dim=-1))
    torch.testing.assert_close(adapted.reference, torch.stack(expected), rtol=1e-5, atol=1e-6)


def test_the_agreement_losses_equal_their_formulas_with_the_frozen_models_features_of_the_same_images(promptsrc):
    adapted, prompts = promptsrc
    adapted.model.eval()
    images, labels = tiny_batch()
    images, labels = images[:3], labels[:3]
    base = load_base_model(open_checkpoint("tiny"), False, CPU, torch.float32)
    with torch.no_grad():
        text = adapted.text_features(prompts)
        embeddings = adapted.image_embeddings(images)
        logits = adapted.logits(embeddings, text).float()
        got = adapted.extra_loss(StepTensors(images, embeddings, text, logits, labels, step_images=6))
        frozen = F.normalize(base.get_image_features(pixel_values=images).pooler_output, dim=-1)
        f = F.normalize(embeddings, dim=-1)
        z = adapted.reference
    assert not torch.allclose(f, frozen, atol=1e-4)  # the prompts changed the image features
    # The micro-batch holds 3 of the step's 6 images: the per-step text term counts half, the batch means count its
    # 3 rows over all 6.
    text_term = 25 * (text - z).abs().mean() * 3 / 6
    image_term = 10 * (f - frozen).abs().sum() / (6 * f.shape[1])
    p, q = F.softmax(logits, dim=1), F.softmax(100 * frozen @ z.T, dim=1)
    kl_term = (q * (q.log() - p.log())).sum() / (6 * len(NAMES))
    assert got.item() == pytest.approx((text_term + image_term + kl_term).item(), rel=1e-4)


def test_after_the_last_epoch_the_prompts_are_their_gaussian_weighted_average(promptsrc):
    adapted, _ = promptsrc
    adapted.gpa = (3.0, 1.0)  # weights proportional to e^-2, e^-1/2, 1 over epochs 1, 2, 3
    for epoch in range(3):
        with torch.no_grad():
            for p in adapted.learner.parameters():
                p.fill_(float(epoch + 1))  # the prompts after epoch 1, 2, 3
        adapted.after_epoch(epoch, 3)
        if epoch < 2:  # the running sum leaves the training prompts alone until the last epoch
            assert all(torch.all(p == epoch + 1) for p in adapted.learner.parameters())
    expected = (1 * math.exp(-2) + 2 * E_HALF + 3) / (math.exp(-2) + E_HALF + 1)
    for p in adapted.learner.parameters():
        torch.testing.assert_close(p.detach(), torch.full_like(p, expected))
