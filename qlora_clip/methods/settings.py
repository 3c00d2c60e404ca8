"""The method flags of a run (AdapterConfig): which method, where it goes, its hyperparameters.

`--r`, `--alpha`, `--dropout_rate`, `--lora_scaling`, `--quantize` (and the training's `--lr`) default
to None, "the method's": table.resolve_flags gives them the method's values before a run is built,
and a flag the method has no field for stays None. `peft_args` are further fields of the method's
PEFT config (or its extras), parsed and checked (peft_args.py); `total_steps` is the run's optimizer
step count, which AdaLoRA's schedule needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qlora_clip import paper
from qlora_clip.backbones.families import Family
from qlora_clip.backbones.targets import layer_norm_names, linear_module_names, target_module_names
from qlora_clip.flags import flag
from qlora_clip.methods.table import METHODS, MODES, QUANTIZE, Method, method_defaults


@dataclass(frozen=True)
class AdapterConfig:
    mode: str = flag("lora", "adapter method (docs/methods.md), or a baseline on the frozen base (docs/baselines.md): "
                     + " ".join(MODES), group="model", choices=MODES, metavar="METHOD")
    quantize: str | None = flag(None, "the frozen base: 4bit = NF4 (bitsandbytes) under any method that supports it "
                                "(--mode lora --quantize 4bit is qlora); default: the method's (4bit for qlora, qdora, "
                                "loftq and the -4bit methods)", group="model", choices=QUANTIZE, type=str)
    r: int | None = flag(None, "the method's rank-like size (LoRA's r, OFT's block size, FourierFT's n_frequency: "
                         "docs/methods.md); default: the method's", group="model", type=int)
    alpha: float | None = flag(None, "the method's scale (LoRA's lora_alpha, FourierFT's scaling, ...); default: the "
                               "method's", group="model", type=float)
    dropout_rate: float | None = flag(None, "the method's dropout (LoRA's on the adapter input); default: the "
                                      "method's", group="model", type=float)
    encoder: str = flag("both", "encoders that get adapters", group="model", choices=paper.ENCODERS)
    position: str = flag("all", "layers that get adapters", group="model", choices=paper.POSITIONS)
    params: tuple[str, ...] = flag(("q", "k", "v"), "attention projections that get adapters (o = output projection)",
                                   group="model", nargs="+", choices=paper.PARAMS)
    lora_scaling: str | None = flag(None, "LoRA family: rslora = alpha/sqrt(r) as CLIP-LoRA (the default); standard = "
                                    "alpha/r", group="model", choices=("rslora", "standard"), type=str)
    peft_args: tuple[str, ...] = flag((), "any other field of the method's PEFT config, e.g. --peft_args "
                                      "d_initial=0.2 (values in JSON; an unknown key lists the valid ones)",
                                      group="model", nargs="+", metavar="KEY=VALUE")
    total_steps: int | None = None  # the run's optimizer steps (AdaLoRA's schedule); not a flag

    def __post_init__(self) -> None:
        for name, value in method_defaults(self.method).items():
            if name != "lr" and getattr(self, name) is None:
                object.__setattr__(self, name, value)

    @property
    def method(self) -> Method:
        return METHODS[self.mode]

    @property
    def rslora(self) -> bool:
        return self.lora_scaling == "rslora"

    @property
    def peft_values(self) -> dict[str, Any]:
        """--peft_args as values (normalised items, as the results line records them)."""
        from qlora_clip.methods.peft_args import decoded

        return decoded(self.peft_args)

    def targets(self, family: Family, model_config: Any) -> list[str]:
        """The modules the method adapts: the --params projections of the selected layers, their LayerNorms, or
        every Linear of them."""
        if self.method.targets == "layer_norms":
            return layer_norm_names(model_config, self.encoder, self.position)
        if self.method.targets == "linears":
            return linear_module_names(family, model_config, self.encoder, self.position)
        return target_module_names(family, model_config, self.encoder, self.position, list(self.params))
