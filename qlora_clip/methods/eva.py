"""EVA (Paischer et al., 2024): LoRA whose A starts from the singular vectors of each adapted layer's
inputs on the few-shot train images, ranks redistributed by explained variance (rho).

Its data pass (`initialize`) runs PEFT's `initialize_lora_eva_weights` on one epoch of the run's own
augmented train batches with the class prompts, before the first step; also on --resume, where it
gives the adapter the ranks the training state was saved with.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.methods.interface import FitInputs
from qlora_clip.methods.peft_tuners import PeftAdapter, method_args
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.training.result import TrainResult


class Eva(PeftAdapter):
    @classmethod
    def extra_config(cls, settings: AdapterConfig) -> dict[str, Any]:
        from peft import EvaConfig

        return {"eva_config": EvaConfig(rho=method_args(settings)["eva_rho"])}

    def fit(self, inputs: FitInputs) -> TrainResult:
        self.initialize(inputs.one_epoch(), inputs.prompts)
        return super().fit(inputs)

    def initialize(self, batches: Iterable[torch.Tensor], prompts: ClassPrompts) -> None:
        """PEFT's EVA initialisation from these image batches and the class prompts (both towers' layers).

        Each adapted layer's input rows are its tokens: all image tokens, and the prompt tokens inside the
        attention mask (padding excluded, as PEFT does for text)."""
        from peft import initialize_lora_eva_weights

        inputs = [{"pixel_values": batch, "input_ids": prompts.input_ids, "attention_mask": prompts.attention_mask}
                  for batch in batches]

        def layer_rows(layer_input, model_input, layer_name: str) -> torch.Tensor:
            x = layer_input[0] if isinstance(layer_input, (tuple, list)) else layer_input
            if "text_model" in layer_name.split("."):
                return x[model_input["attention_mask"].bool()]
            return x.reshape(-1, x.shape[-1])

        was_training = self.model.training
        initialize_lora_eva_weights(self.model, dataloader=inputs, prepare_model_inputs_fn=None,
                                    prepare_layer_inputs_fn=layer_rows, gather_distributed_inputs=False,
                                    show_progress_bar=False)
        self.model.train(was_training)
