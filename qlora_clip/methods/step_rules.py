"""What a method adds to the shared training step, and EVA's data pass before it.

trainer.TrainStep is one step for every method; a method changes it only through `StepRules`:

- LoRA+ (Hayou et al., 2024): the B matrices (and 1-D adapter vectors) train at `loraplus_lr_ratio`
  times the learning rate; the grouping is PEFT's `create_loraplus_optimizer`'s. Weight decay stays
  the protocol's for every group (PEFT's helper defaults it to 0), so the learning rate of B is the
  only difference from LoRA.
- AdaLoRA (Zhang et al., 2023): its orthogonality regulariser on P and Q joins the loss (PEFT adds it
  only in the model's forward with labels, which CLIP's feature calls bypass), and its rank
  allocator runs after every optimizer step, before the gradients are cleared.

Every other method gets no group, no regulariser and no hook: the step is the one LoRA always took.

EVA (Paischer et al., 2024) initialises A from the singular vectors of each adapted layer's inputs
on the few-shot train images: `eva_initialize` runs PEFT's `initialize_lora_eva_weights` on batches of
the run's own augmented train stream with the class prompts, before the first step.
"""
from __future__ import annotations

from typing import Iterable

import torch
from peft import PeftModel
from peft.tuners.adalora import AdaLoraModel

from qlora_clip.backbones.encode import ClassPrompts


class StepRules:
    """The method's part of one training step (trainer.TrainStep calls these three)."""

    def __init__(self, model: torch.nn.Module, loraplus_lr_ratio: float | None = None):
        self.model = model
        self.loraplus_lr_ratio = loraplus_lr_ratio
        base = model.base_model if isinstance(model, PeftModel) else None
        self.adalora = base if isinstance(base, AdaLoraModel) else None

    def parameter_groups(self, params: list[torch.nn.Parameter], lr: float) -> list:
        """What the optimizer is built on: the parameters themselves, or LoRA+'s two learning-rate groups."""
        if self.loraplus_lr_ratio is None:
            return params
        ids = {id(p) for p in params}
        fast = [p for n, p in self.model.named_parameters() if id(p) in ids and ("lora_B" in n or p.ndim == 1)]
        fast_ids = {id(p) for p in fast}
        return [{"params": [p for p in params if id(p) not in fast_ids], "lr": lr},
                {"params": fast, "lr": lr * self.loraplus_lr_ratio}]

    def regularizer(self) -> torch.Tensor | None:
        """AdaLoRA's orthogonality penalty on P (lora_A) and Q (lora_B), weighted, as AdaLoraModel.forward adds it."""
        if self.adalora is None:
            return None
        config = self.adalora.peft_config[self.adalora.trainable_adapter_name]
        if config.orth_reg_weight == 0:
            return None
        terms = []
        for name, p in self.adalora.model.named_parameters():
            if ("lora_A" in name or "lora_B" in name) and self.adalora.trainable_adapter_name in name:
                cov = p @ p.T if "lora_A" in name else p.T @ p
                eye = torch.eye(*cov.size(), out=torch.empty_like(cov))
                terms.append(torch.norm(cov - eye, p="fro"))
        return config.orth_reg_weight * torch.stack(terms).mean() if terms else None

    def after_optimizer_step(self, step: int) -> None:
        """AdaLoRA's importance scores and budget, after the optimizer step of `step` (0-based)."""
        if self.adalora is not None:
            self.adalora.update_and_allocate(step)


def eva_initialize(model: torch.nn.Module, images: Iterable[torch.Tensor], prompts: ClassPrompts) -> None:
    """PEFT's EVA initialisation from these image batches and the class prompts (both towers' layers).

    Each adapted layer's input rows are its tokens: all image tokens, and the prompt tokens inside the
    attention mask (padding excluded, as PEFT does for text)."""
    from peft import initialize_lora_eva_weights

    inputs = [{"pixel_values": batch, "input_ids": prompts.input_ids, "attention_mask": prompts.attention_mask}
              for batch in images]

    def layer_rows(layer_input, model_input, layer_name: str) -> torch.Tensor:
        x = layer_input[0] if isinstance(layer_input, (tuple, list)) else layer_input
        if "text_model" in layer_name.split("."):
            return x[model_input["attention_mask"].bool()]
        return x.reshape(-1, x.shape[-1])

    was_training = model.training
    initialize_lora_eva_weights(model, dataloader=inputs, prepare_model_inputs_fn=None,
                                prepare_layer_inputs_fn=layer_rows, gather_distributed_inputs=False,
                                show_progress_bar=False)
    model.train(was_training)
