"""CLIP-Adapter (Gao et al.): a bottleneck MLP on the image embedding, blended back residually,

    x' = 0.2 A(x) + 0.8 x,   A(x) = ReLU(W2 ReLU(W1 x)),   W1: dim -> dim/4, W2: dim/4 -> dim, no biases,
    logits = 100 cos(x', t_k),

x the raw (unnormalised) image embedding, as the official clip_adapter.py applies it; t the run's text
features. Trained as CoOp's Dassl trainer trains (the official README runs it there): SGD with
momentum 0.9 and weight decay 5e-4, batches of 32, a constant first epoch, cosine per epoch
(schedules.train_dassl), one fresh augmented view (Dassl's RandomResizedCrop(0.08, 1) + flip) per image
and epoch. The weights kept are the last epoch's. Learning rate and epochs: hparams.CLIP_ADAPTER.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qlora_clip.methods.baselines import hparams
from qlora_clip.methods.baselines.base import Baseline, BaselineInputs, FeatureBaseline, Fitted, Needs
from qlora_clip.methods.baselines.schedules import train_dassl
from qlora_clip.methods.baselines.views import ViewSet


def views_for(epochs: int) -> ViewSet:
    """Dassl's training views, one per epoch: the stream CoOp's views come from too."""
    return ViewSet("dassl-epochs", tuple(hparams.CLIP_ADAPTER["view_scale"]), epochs)


class Adapter(nn.Module):
    """The official Adapter(c_in, reduction=4): Linear - ReLU - Linear - ReLU, no biases."""

    def __init__(self, dim: int, reduction: int):
        super().__init__()
        self.down = nn.Linear(dim, dim // reduction, bias=False)
        self.up = nn.Linear(dim // reduction, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.up(F.relu(self.down(x))))


def blend(adapter: Adapter, features: torch.Tensor, ratio: float) -> torch.Tensor:
    """ratio A(x) + (1 - ratio) x: the residual blend of the adapted and the original embedding."""
    return ratio * adapter(features) + (1 - ratio) * features


def seeded_adapter(dim: int, reduction: int, seed: int, device: torch.device) -> Adapter:
    """nn.Linear's default initialisation, drawn from the run's seed without touching the global generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = Adapter(dim, reduction)
    return adapter.to(device)


def _needs(dataset: str, shots: int) -> Needs:
    return Needs(views=(views_for(hparams.CLIP_ADAPTER["epochs"]),))


def fit(inputs: BaselineInputs) -> Fitted:
    config = hparams.CLIP_ADAPTER
    views = inputs.bank.train_views(views_for(config["epochs"]))
    adapter = seeded_adapter(views.features.shape[-1], config["reduction"], inputs.seed, inputs.device)
    ratio, text = config["ratio"], inputs.text

    def loss_of(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(inputs.zero_shot_logits(blend(adapter, features, ratio), text), labels)

    adapter.train()
    run = train_dassl(list(adapter.parameters()), loss_of, views.features, views.labels, config, inputs.seed,
                      inputs.device)
    adapter.eval()
    weights = sum(p.numel() for p in adapter.parameters())

    @torch.no_grad()
    def predict(features: torch.Tensor, class_text: torch.Tensor) -> torch.Tensor:
        return inputs.zero_shot_logits(blend(adapter, features, ratio), class_text)

    return Fitted(predict=predict, params=dict(config), trainable_params=weights, added_params=weights,
                  steps=run.steps, images_seen=run.images_seen, losses=run.losses)


CLIP_ADAPTER = Baseline(needs=_needs, fit=fit)


class ClipAdapter(FeatureBaseline):
    baseline = CLIP_ADAPTER
