"""LoRA+ (Hayou et al., ICML 2024): LoRA whose B matrices (and 1-D adapter vectors) train at
`loraplus_lr_ratio` times the learning rate.

The grouping is PEFT's `create_loraplus_optimizer`'s. Weight decay stays the protocol's for every
group (PEFT's helper defaults it to 0), so the learning rate of B is the only difference from LoRA.
"""
from __future__ import annotations

import torch

from qlora_clip.methods.peft_tuners import PeftAdapter


class LoraPlus(PeftAdapter):
    def parameter_groups(self, params: list[torch.nn.Parameter], lr: float) -> list:
        """Two learning-rate groups: A at `lr`, B (and 1-D adapter vectors) at `lr` x loraplus_lr_ratio."""
        ratio = self.method_args()["loraplus_lr_ratio"]
        ids = {id(p) for p in params}
        fast = [p for n, p in self.model.named_parameters() if id(p) in ids and ("lora_B" in n or p.ndim == 1)]
        fast_ids = {id(p) for p in fast}
        return [{"params": [p for p in params if id(p) not in fast_ids], "lr": lr},
                {"params": fast, "lr": lr * ratio}]
