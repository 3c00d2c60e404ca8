"""Class text features for the baselines: one prompt per class, or the mean over a template set."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from qlora_clip.data.items import class_prompts
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.training.precision import Precision

# Prompts encoded per text-tower pass: an 80-template ImageNet ensemble is 80,000 prompts.
TEXT_BATCH = 1024


@torch.no_grad()
def prompt_features(model: torch.nn.Module, tokenizer, prompts: list[str], precision: Precision) -> torch.Tensor:
    """L2-normalised text features (prompts, dim), float32 on the device, in batches of TEXT_BATCH."""
    out = []
    for start in range(0, len(prompts), TEXT_BATCH):
        with precision.autocast():
            batch = ClassPrompts(tokenizer, prompts[start:start + TEXT_BATCH], precision.device)
            out.append(batch.features(model).float())
    return F.normalize(torch.cat(out), dim=-1)  # again in fp32, when autocast normalised in half precision


def ensemble_features(model: torch.nn.Module, tokenizer, classnames: list[str], templates: tuple[str, ...],
                      precision: Precision) -> torch.Tensor:
    """Per class: the mean of its normalised features over the templates, normalised again (CLIP's
    prompt-ensembling notebook), (classes, dim)."""
    prompts = [prompt for template in templates for prompt in class_prompts(template, classnames)]
    features = prompt_features(model, tokenizer, prompts, precision).view(len(templates), len(classnames), -1)
    return F.normalize(features.mean(dim=0), dim=-1)
