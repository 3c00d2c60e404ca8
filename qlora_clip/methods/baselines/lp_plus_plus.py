"""LP++ (Huang et al., CVPR 2024): a linear probe whose class weights blend visual prototypes with the
text embeddings, logits = f W^T + b + alpha_k <f, t_k>, with step sizes derived from the data.

As the official code (methods/linear_probe_p2.py) does it, on L2-normalised image embeddings f of one
augmented view per train image (RandomResizedCrop(scale=(0.5, 1)) + flip) and the run's text features t:
- W starts at the per-class sums of the train embeddings, b at nn.Linear's default (uniform in
  +-1/sqrt(dim), seeded by the run's seed); every alpha_k at 250 x the mean over classes of the class's
  mean <f_i, t_k>;
- 300 full-batch epochs of the mean cross-entropy: SGD with momentum 0.9 on (W, b) with step size
  4 n / lambda_max(F^T F), and every 10 epochs a plain gradient step on alpha with step size
  n / (4 max_k sum_i <f_i, t_k>^2);
- the alpha gradient is never cleared in the official code (its optimiser holds only W and b), so the
  step every 10 epochs uses the sum of alpha's gradients since the first epoch; we do the same, on purpose;
- the model kept is the epoch with the best few-shot val accuracy (the last of equals).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qlora_clip.methods.baselines import hparams
from qlora_clip.methods.baselines.base import Baseline, BaselineInputs, FeatureBaseline, Fitted, Needs, accuracy
from qlora_clip.methods.baselines.views import ViewSet

VIEWS = ViewSet("lp++", tuple(hparams.LP_PLUS_PLUS["view_scale"]), count=1)


@dataclass
class BlendedProbe:
    weight: torch.Tensor  # (classes, dim)
    bias: torch.Tensor    # (classes,)
    alpha: torch.Tensor   # (classes,)
    text: torch.Tensor    # (classes, dim), fixed

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """f W^T + b + alpha * (f T^T), on normalised embeddings."""
        return features @ self.weight.T + self.bias + self.alpha * (features @ self.text.T)

    def detached(self) -> BlendedProbe:
        return BlendedProbe(self.weight.detach().clone(), self.bias.detach().clone(), self.alpha.detach().clone(),
                            self.text)


def class_sums(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Per class, the sum (not the mean: the official code's compute_centroids) of its embeddings."""
    return torch.zeros(n_classes, features.shape[1], dtype=features.dtype, device=features.device).index_add_(
        0, labels, features)


def initial_alpha(features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor, n_classes: int) -> float:
    """250 x the mean over classes of (per class, the mean of <f_i, t_k> over its images)."""
    own = (features @ text.T).gather(1, labels[:, None]).squeeze(1)
    counts = torch.bincount(labels, minlength=n_classes).to(own)
    per_class = torch.zeros(n_classes, dtype=own.dtype, device=own.device).index_add_(0, labels, own) / counts
    return hparams.LP_PLUS_PLUS["alpha_init_scale"] * float(per_class.mean())


def weight_step_size(features: torch.Tensor) -> float:
    """4 n / lambda_max(F^T F): the official calculate_lr_w."""
    return 4 * len(features) / float(torch.linalg.eigvalsh((features.T @ features).double()).max())


def alpha_step_size(features: torch.Tensor, text: torch.Tensor) -> float:
    """n / (4 max_k sum_i <f_i, t_k>^2): the official calculate_lr_alpha."""
    return len(features) / (4 * float((features @ text.T).square().sum(dim=0).max()))


def initial_bias(n_classes: int, dim: int, seed: int, device: torch.device) -> torch.Tensor:
    """nn.Linear's default bias, uniform in +-1/sqrt(dim), from a generator seeded by the run's seed."""
    generator = torch.Generator().manual_seed(seed)
    bound = 1 / dim ** 0.5
    return (torch.rand(n_classes, generator=generator) * 2 - 1).mul_(bound).to(device)


def _needs(dataset: str, shots: int) -> Needs:
    return Needs(val=True, views=(VIEWS,))


def fit(inputs: BaselineInputs) -> Fitted:
    config = hparams.LP_PLUS_PLUS
    train, val = inputs.bank.train_views(VIEWS), inputs.bank.val()
    x = F.normalize(inputs.on_device(train.features[0]), dim=-1)
    y = train.labels.to(inputs.device)
    val_x, val_y = F.normalize(inputs.on_device(val.features), dim=-1), val.labels.to(inputs.device)
    n_classes, text = len(inputs.classnames), inputs.text
    alpha0 = initial_alpha(x, y, text, n_classes)
    lr_w, lr_alpha = weight_step_size(x), alpha_step_size(x, text)
    probe = BlendedProbe(class_sums(x, y, n_classes).requires_grad_(),
                         initial_bias(n_classes, x.shape[1], inputs.seed, inputs.device).requires_grad_(),
                         torch.full((n_classes,), alpha0, device=inputs.device, requires_grad=True), text)
    optimizer = torch.optim.SGD([probe.weight, probe.bias], lr=lr_w, momentum=config["momentum"])
    best, best_acc, best_epoch, losses = probe.detached(), -1.0, -1, []
    for epoch in range(config["epochs"]):
        loss = F.cross_entropy(probe.logits(x), y)
        optimizer.zero_grad()   # W and b only: alpha's gradient accumulates, as in the official code
        loss.backward()
        optimizer.step()
        if (epoch + 1) % config["alpha_every"] == 0:
            with torch.no_grad():
                probe.alpha -= lr_alpha * probe.alpha.grad
        losses.append(loss.detach().item())
        with torch.no_grad():
            val_acc = accuracy(probe.logits(val_x), val_y)
        if val_acc >= best_acc:
            best, best_acc, best_epoch = probe.detached(), val_acc, epoch
    weights = probe.weight.numel() + probe.bias.numel() + probe.alpha.numel()
    return Fitted(predict=lambda features, text: best.logits(F.normalize(features, dim=-1)),
                  params={**config, "lr_w": lr_w, "lr_alpha": lr_alpha, "alpha_init": alpha0,
                          "best_epoch": best_epoch, "best_val_acc": best_acc},
                  trainable_params=weights, added_params=weights, steps=config["epochs"],
                  images_seen=config["epochs"] * len(y), losses=losses)


LP_PLUS_PLUS = Baseline(needs=_needs, fit=fit)


class LpPlusPlus(FeatureBaseline):
    baseline = LP_PLUS_PLUS
