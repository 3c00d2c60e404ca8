"""The epoch schedules of the baselines that train with batches: Dassl's (CoOp, CLIP-Adapter) and
Tip-Adapter-F's, written out so a test can compare them with the published code's behaviour. Dassl's
learning rate per epoch (`dassl_lr`) lives with the training loop's recipes (training/optimization.py),
which the prompt learners trained through the loop share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from qlora_clip.training.optimization import dassl_lr

__all__ = ["EpochRun", "dassl_lr", "epoch_batches", "train_dassl"]


def epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int, drop_last: bool) -> list[torch.Tensor]:
    """One epoch's batches of item indices, in a random order seeded by (seed, epoch).

    `drop_last`: Dassl's train loader drops the short last batch when the set has at least one full
    batch (drop_last = is_train and len >= batch_size); Tip-Adapter's keeps it.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_items, generator=generator)
    batches = list(order.split(batch_size))
    if drop_last and n_items >= batch_size and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


@dataclass
class EpochRun:
    steps: int = 0
    images_seen: int = 0
    losses: list[float] = field(default_factory=list)


def train_dassl(params: list[torch.nn.Parameter], loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                views: torch.Tensor, labels: torch.Tensor, config: dict, seed: int,
                device: torch.device) -> EpochRun:
    """Dassl's training as CoOp's and CLIP-Adapter's trainers run it, on cached view features.

    Epoch e trains on view e of every train image (views: (epochs, images, dim), a fresh augmentation
    per image and epoch, as Dassl's loader draws them), in shuffled batches of config['batch_size']
    with the short last batch dropped; SGD with Dassl's momentum and weight decay at the epoch's
    dassl_lr. `loss_of(raw embeddings, labels)` is the method's mean loss on a batch.
    """
    epochs = views.shape[0]
    optimizer = torch.optim.SGD(params, lr=config["lr"], momentum=config["momentum"],
                                weight_decay=config["weight_decay"])
    labels = labels.to(device)
    run = EpochRun()
    for epoch in range(epochs):
        lr = dassl_lr(epoch, config["lr"], epochs, config["warmup_epochs"], config["warmup_lr"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        features = views[epoch].to(device, torch.float32)
        for batch in epoch_batches(len(labels), config["batch_size"], seed, epoch, drop_last=True):
            batch = batch.to(device)
            loss = loss_of(features[batch], labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.steps += 1
            run.images_seen += len(batch)
            run.losses.append(loss.detach().item())
    return run
