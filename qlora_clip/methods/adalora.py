"""AdaLoRA (Zhang et al., ICLR 2023): LoRA in SVD form whose ranks are pruned from init_r to r by importance.

Its schedule needs the run's step count (`total_step`), and it starts at init_r = 1.5 x r as the
paper does. Two parts of the training step are its own: its orthogonality regulariser on P and Q
joins the loss (PEFT adds it only in the model's forward with labels, which CLIP's feature calls
bypass), and its rank allocator runs after every optimizer step, before the gradients are cleared.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from qlora_clip.methods.peft_tuners import PeftAdapter
from qlora_clip.methods.settings import AdapterConfig


class AdaLora(PeftAdapter):
    @classmethod
    def extra_config(cls, settings: AdapterConfig) -> dict[str, Any]:
        return {"init_r": math.ceil(1.5 * settings.r), "total_step": max(settings.total_steps or 1, 1)}

    def regularizer(self) -> torch.Tensor | None:
        """The orthogonality penalty on P (lora_A) and Q (lora_B), weighted, as AdaLoraModel.forward adds it."""
        tuner = self.model.base_model
        config = tuner.peft_config[tuner.trainable_adapter_name]
        if config.orth_reg_weight == 0:
            return None
        terms = []
        for name, p in tuner.model.named_parameters():
            if ("lora_A" in name or "lora_B" in name) and tuner.trainable_adapter_name in name:
                cov = p @ p.T if "lora_A" in name else p.T @ p
                eye = torch.eye(*cov.size(), out=torch.empty_like(cov))
                terms.append(torch.norm(cov - eye, p="fro"))
        return config.orth_reg_weight * torch.stack(terms).mean() if terms else None

    def after_optimizer_step(self, step: int) -> None:
        """The importance scores and the rank budget, after the optimizer step of `step` (0-based)."""
        self.model.base_model.update_and_allocate(step)
