"""CLAP (Silva-Rodriguez et al., CVPR 2024): a zero-shot-initialised linear probe with a class-adaptive constraint,
validation-free.

The probe's class prototypes W (classes, dim) start at the class prompts' text features t, raw (not normalised,
as the official code keeps them, trainers/adapters.py#L91-L128, #L148-L150); logits are the family's of the
normalised image feature and the normalised prototypes (CLIP: 100 x cosine, #L343-L354). The loss is

    cross-entropy + mean_c lambda_c |w_c - t_c|^2                  (zero_shot_constraint, #L219-L230)

with lambda_c the zero-shot model's mean softmax confidence in class c over class c's augmented support views
(init_lagrangian_multipliers, #L232-L252), computed once before training and kept fixed: the published runs'
CONSTRAINT "l2" (the augmented-Lagrangian update is the code's "adaptative" variant, not what the paper's
tables ran). The support is every train image in 20 augmented views (Dassl's random_resized_crop(0.08-1) +
flip, #L142-L143), cached once; each of the 300 epochs shuffles all of them and takes as many batches of 256
as Dassl's loader has over the original images (floor(images / 256), at least one: #L421-L484), SGD with
momentum 0.9, no weight decay, lr 0.1 with Dassl's schedule (one constant epoch at 1e-5, then a cosine stepped
per epoch). The last epoch is kept: no validation at all (by design).

Classes without a prototype (base-to-novel's new ones, --eval_datasets) are scored with their text features,
i.e. by zero-shot CLIP: "new" accuracy is zero-shot's (the paper has no base-to-novel setting).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.methods.baselines.base import Baseline, BaselineInputs, Fitted, Needs
from qlora_clip.methods.baselines.saved_fit import SavedFeatureFit, row_of
from qlora_clip.methods.baselines.schedules import dassl_lr, epoch_batches
from qlora_clip.methods.baselines.views import ViewSet
from qlora_clip.methods.published import CLAP

VIEWS = ViewSet("clap", tuple(CLAP["view_scale"]), CLAP["views"])


def multipliers(zero_shot_logits: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """lambda_c = the mean over class c's support samples of softmax(zero-shot logits)[c] (adapters.py#L232-L252)."""
    onehot = F.one_hot(labels, n_classes).to(zero_shot_logits.dtype)
    return torch.diag(torch.softmax(zero_shot_logits, dim=-1).T @ onehot) / onehot.sum(0)


def penalty(prototypes: torch.Tensor, zero_shot: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_c lambda_c |w_c - t_c|^2 on the raw prototypes (adapters.py#L219-L230)."""
    return (weights * (prototypes - zero_shot).pow(2).sum(dim=-1)).mean()


def batches_per_epoch(images: int, batch_size: int) -> int:
    """Dassl's train loader over the original images: full batches only when there is one, else a single batch."""
    return images // batch_size if images >= batch_size else 1


def raw_text(model: torch.nn.Module, prompts: ClassPrompts) -> torch.Tensor:
    """The prompts' text features before normalisation (the projection's output), float32."""
    with torch.no_grad():
        out = model.get_text_features(input_ids=prompts.input_ids, attention_mask=prompts.attention_mask)
    return out.pooler_output.float()


def _needs(dataset: str, shots: int) -> Needs:
    return Needs(views=(VIEWS,))  # no val: validation-free


def fit(inputs: BaselineInputs) -> Fitted:
    views = inputs.bank.train_views(VIEWS)
    n_views, n_images, dim = views.features.shape
    x = inputs.on_device(views.features).reshape(-1, dim)  # raw embeddings, view-major
    y = views.labels.to(inputs.device).repeat(n_views)
    with inputs.precision.autocast():
        t = raw_text(inputs.model, inputs.prompts)
    n_classes = len(t)
    with torch.no_grad():
        weights = multipliers(inputs.zero_shot_logits(x, F.normalize(t, dim=-1)).float(), y, n_classes)
    prototypes = t.clone().requires_grad_()
    optimizer = torch.optim.SGD([prototypes], lr=CLAP["lr"], momentum=CLAP["momentum"],
                                weight_decay=CLAP["weight_decay"])
    steps = batches_per_epoch(n_images, CLAP["batch_size"])
    losses, seen = [], 0
    for epoch in range(CLAP["epochs"]):
        for group in optimizer.param_groups:
            group["lr"] = dassl_lr(epoch, CLAP["lr"], CLAP["epochs"], CLAP["warmup_epochs"], CLAP["warmup_lr"])
        batches = epoch_batches(len(y), CLAP["batch_size"], inputs.seed, epoch, drop_last=True)[:steps]
        for batch in batches:
            batch = batch.to(inputs.device)
            logits = inputs.zero_shot_logits(x[batch], F.normalize(prototypes, dim=-1))
            loss = F.cross_entropy(logits, y[batch]) + penalty(prototypes, t, weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach().item())
            seen += len(batch)
    params = {**CLAP, "batches_per_epoch": steps, "multipliers_mean": float(weights.mean()),
              "multipliers_min": float(weights.min()), "multipliers_max": float(weights.max())}
    return fitted(inputs.model, inputs.family_logits, prototypes.detach(), t, weights, params,
                  list(inputs.prompts.prompts), trainable_params=prototypes.numel(), steps=CLAP["epochs"] * steps,
                  images_seen=seen, losses=losses)


def fitted(model: torch.nn.Module, family_logits, prototypes: torch.Tensor, zero_shot: torch.Tensor,
           weights: torch.Tensor, params: dict, prompts: list[str], **fields) -> Fitted:
    """The probe as the evaluator calls it: its normalised prototypes for the classes it has, the prompts' own
    text features for any other (zero-shot)."""
    rows = F.normalize(prototypes, dim=-1)

    def text(class_prompts: ClassPrompts) -> torch.Tensor:
        found = row_of(prompts, class_prompts)
        if all(row is not None for row in found):
            return rows[found]
        with torch.no_grad():
            own = class_prompts.features(model).float()
        return torch.stack([rows[row] if row is not None else own[i] for i, row in enumerate(found)])

    return Fitted(predict=lambda features, class_text: family_logits(F.normalize(features, dim=-1), class_text),
                  params=params, added_params=prototypes.numel(), text=text,
                  saved={"prototypes": prototypes, "zero_shot": zero_shot, "multipliers": weights}, prompts=prompts,
                  **fields)


CLAP_FIT = Baseline(needs=_needs, fit=fit)


class Clap(SavedFeatureFit):
    baseline = CLAP_FIT

    @classmethod
    def restore(cls, adapted: Clap, tensors: dict[str, torch.Tensor], params: dict, prompts: list[str]) -> Fitted:
        return fitted(adapted.model, adapted.family_logits, tensors["prototypes"], tensors["zero_shot"],
                      tensors["multipliers"], params, prompts)
