"""CLIP-Adapter's residual blend and logits, by hand, and its training on given views."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from baseline_inputs import GivenBank, given_inputs

from qlora_clip.methods.baselines import clip_adapter, hparams


def test_logits_are_100_cosine_of_the_blended_embedding():
    adapter = clip_adapter.Adapter(4, reduction=4)
    with torch.no_grad():
        adapter.down.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        adapter.up.weight.copy_(torch.tensor([[0.0], [2.0], [0.0], [-1.0]]))
    x = torch.tensor([[3.0, 1.0, 0.0, 0.0]])
    # A(x) = ReLU(up ReLU(down x)) = ReLU([0, 6, 0, -3]) = [0, 6, 0, 0]; x' = 0.2 A(x) + 0.8 x
    blended = clip_adapter.blend(adapter, x, 0.2)
    assert torch.allclose(blended, torch.tensor([[2.4, 0.8 + 1.2, 0.0, 0.0]]))
    text = F.normalize(torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]), dim=-1)
    # CLIP-Adapter's logits are the family's zero-shot logits of the blend (CLIP's: 100 x cosine).
    inputs = given_inputs(GivenBank(x, torch.tensor([0]), x, torch.tensor([0])), text)
    logits = inputs.zero_shot_logits(blended, text)
    assert torch.allclose(logits, 100 * F.normalize(blended, dim=-1) @ text.T)
    assert sum(p.numel() for p in adapter.parameters()) == 4 + 4  # no biases


def test_training_moves_the_adapter_over_its_epochs_of_views():
    torch.manual_seed(0)
    classes, dim, epochs = 2, 8, hparams.CLIP_ADAPTER["epochs"]
    labels = torch.arange(classes).repeat(3)
    views = torch.randn(epochs, len(labels), dim)
    bank = GivenBank(views[0], labels, views[0], labels, {"dassl-epochs": views})
    fitted = clip_adapter.fit(given_inputs(bank, F.normalize(torch.randn(classes, dim), dim=-1)))
    assert fitted.steps == epochs  # 6 images: one (kept) batch per epoch
    assert fitted.trainable_params == 2 * dim * (dim // 4)
    assert fitted.params["ratio"] == 0.2
    assert fitted.params["lr"] == hparams.CLIP_ADAPTER["lr"]
