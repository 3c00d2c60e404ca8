"""Study: what PEFT's placement of DoRA's dropout costs, against dropout on the adapter branch only.

PEFT applies DoRA's dropout to the input of the whole re-normalised layer, so in training every
adapted projection runs its frozen matmul twice (W x for the output, W drop(x) for DoRA) and a
QDoRA layer dequantizes once more. AdapterDropoutDora drops only the adapter branch's input, as
LoRA does: m / ||W + sBA|| * (W x + s B A drop(x)). It equals PEFT's DoRA in evaluation and with
dropout 0 (tests/test_bench.py) but changes what DoRA with dropout trains, so model.py keeps
PEFT's; this study measures what the change would save.
"""
from __future__ import annotations

import torch
from peft.tuners.lora.variants import DoraLinearVariant

from bench.settings import BenchSettings
from bench.step_time import first_setting, measure_setting


class AdapterDropoutDora(DoraLinearVariant):
    """DoRA with the dropout on the adapter branch only, as in LoRA: m / ||W + sBA|| * (W x + s B A drop(x))."""

    @staticmethod
    def forward(module, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs) -> torch.Tensor:
        return result + module.lora_magnitude_vector[active_adapter](
            module.lora_dropout[active_adapter](x), lora_A=module.lora_A[active_adapter],
            lora_B=module.lora_B[active_adapter], scaling=module.scaling[active_adapter],
            base_layer=module.get_base_layer(), base_result=result, adapter_name=active_adapter)


def use_adapter_dropout_dora(model: torch.nn.Module) -> None:
    """Replace PEFT's DoRA forward by AdapterDropoutDora in every DoRA layer of `model`."""
    for module in model.modules():
        variants = getattr(module, "lora_variant", None) or {}
        for name, variant in variants.items():
            if variant is DoraLinearVariant or isinstance(variant, DoraLinearVariant):
                variants[name] = AdapterDropoutDora()


def run(bench: BenchSettings, peak_flops: dict[str, float]) -> tuple[dict, list[dict]]:
    """PEFT's DoRA with and without dropout, the variant, and LoRA, on both encoders; (summary, rows)."""
    peft_dora = measure_setting(bench, peak_flops, first_setting(bench, "dora"))
    no_dropout = measure_setting(bench, peak_flops, first_setting(bench, "dora", dropout=0.0))
    variant = measure_setting(bench, peak_flops, first_setting(bench, "dora"),
                              prepare_model=use_adapter_dropout_dora)
    lora = measure_setting(bench, peak_flops, first_setting(bench, "lora"))
    summary = {"batch": peft_dora["batch"], "step_s_dora_peft": peft_dora["step_s"],
               "step_s_dora_no_dropout": no_dropout["step_s"],
               "step_s_dora_adapter_dropout": variant["step_s"], "step_s_lora": lora["step_s"],
               "peft_over_adapter_dropout": peft_dora["step_s"] / variant["step_s"],
               "adapter_dropout_dora_over_lora": variant["step_s"] / lora["step_s"]}
    rows = [dict(row, adapter_dropout_dora=row is variant) for row in (peft_dora, no_dropout, variant, lora)]
    return summary, rows
