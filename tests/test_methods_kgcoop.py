"""KgCoOp's knowledge term as its code computes it: 1 - mean cos to the hand-crafted class embeddings (half the
paper's mean squared distance), weighted 8, once per step; the hand-crafted embeddings are the frozen base's
features of the run's prompts, which the context, initialised from "a photo of a", reproduces at step 0."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.methods.interface import StepTensors, load_adapted
from qlora_clip.methods.prompts.kgcoop import knowledge_term
from qlora_clip.methods.settings import AdapterConfig

CPU = torch.device("cpu")
NAMES = ["red", "green thing", "blue", "yellow"]


def test_the_knowledge_term_by_hand_and_the_papers_form_is_twice_it():
    # class 1: cos((1,0), (0.6,0.8)) = 0.6; class 2: cos((0,2), (0,1)) = 1 -> 1 - 0.8 = 0.2
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    hand = torch.tensor([[0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    assert knowledge_term(text, hand).item() == pytest.approx(0.2, abs=1e-7)
    # The paper's mean squared distance of the normalised embeddings: |(1,0) - (0.6,0.8)|^2 = 0.8 and 0 -> 0.4.
    paper = (F.normalize(text, dim=1) - F.normalize(hand, dim=1)).pow(2).sum(dim=1).mean()
    assert paper.item() == pytest.approx(0.4, abs=1e-12)


@pytest.fixture(scope="module")
def kgcoop():
    adapted = load_adapted("tiny", AdapterConfig(mode="kgcoop"), CPU, torch.float32)
    prompts = ClassPrompts(adapted.bundle.tokenizer, [f"a photo of a {name}." for name in NAMES], CPU,
                           classes=SimpleNamespace(classnames=NAMES))
    adapted.initialize([], prompts)
    return adapted, prompts


def test_the_hand_crafted_embeddings_are_the_frozen_bases_and_the_initial_context_spells_them(kgcoop):
    adapted, prompts = kgcoop
    torch.testing.assert_close(adapted.handcrafted, prompts.features(adapted.model).detach())
    # The context starts as the embeddings of "a photo of a", in their place: the prompted features at step 0 are
    # the base's features of "a photo of a <name>." and the term is 0.
    with torch.no_grad():
        text = adapted.text_features(prompts)
    torch.testing.assert_close(text, adapted.handcrafted, rtol=0, atol=1e-5)
    assert knowledge_term(text, adapted.handcrafted).item() == pytest.approx(0.0, abs=1e-5)


def test_the_step_adds_eight_times_the_term_shared_out_over_its_micro_batches(kgcoop):
    adapted, prompts = kgcoop
    # Move the context away from the words (by a perturbation LayerNorm does not remove, unlike a constant).
    shift = torch.randn(adapted.learner.ctx.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted.learner.ctx.add_(shift)
        text = adapted.text_features(prompts)
        adapted.learner.ctx.sub_(shift)
    term = 1 - F.cosine_similarity(text, adapted.handcrafted, dim=-1).mean()
    assert term.item() > 1e-3
    labels = torch.tensor([0, 1, 2])
    step = StepTensors(images=None, embeddings=None, text=text, logits=None, labels=labels, step_images=6)
    assert adapted.extra_loss(step).item() == pytest.approx(8.0 * term.item() * 3 / 6, rel=1e-5)
