"""The compatibility shims in compat.py: the library behaviour each works around is still there,
and the shim still stops it. When an upgrade fixes the library, the first assertion fails: remove
the shim then."""
from __future__ import annotations

import bitsandbytes as bnb
import bitsandbytes.nn.modules as bnb_modules
import torch

from qlora_clip.backbones import compat
from qlora_clip.methods.interface import load_adapted
from qlora_clip.methods.settings import AdapterConfig

CPU = torch.device("cpu")


def first_4bit_layer(model) -> bnb.nn.Linear4bit:
    return next(m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))


def test_bitsandbytes_still_repacks_for_cpu_inference_and_the_shim_prevents_it(monkeypatch):
    repacks = []
    real_repack = bnb_modules._convert_weight_packed_for_cpu

    def spy(data, quant_state, *args, **kwargs):
        repacks.append(data.shape)
        return data, quant_state  # leave the layout as it is: only count the attempt

    monkeypatch.setattr(bnb_modules, "_convert_weight_packed_for_cpu", spy)
    assert callable(real_repack)
    model = load_adapted("tiny", AdapterConfig("qlora"), CPU, torch.float32).model
    layer = first_4bit_layer(model)
    assert getattr(layer, compat.CPU_REPACK_ATTRIBUTE) is False  # the loader applied the shim
    x = torch.randn(2, layer.in_features)
    layer.eval()

    # What bitsandbytes does on an AVX512-BF16 CPU (the attribute's default there): it repacks on
    # the first eval pass under no_grad, the zero-shot evaluation's situation.
    setattr(layer, compat.CPU_REPACK_ATTRIBUTE, True)
    with torch.no_grad():
        layer(x)
    assert repacks, "bitsandbytes no longer repacks 4-bit weights for CPU inference: remove the shim"

    repacks.clear()
    compat.keep_cpu_4bit_layout_trainable(model)
    with torch.no_grad():
        layer(x)
    assert repacks == []


def test_shim_applies_only_to_the_versions_that_repack():
    assert not compat.needs_cpu_4bit_layout_shim("0.48.2")
    assert compat.needs_cpu_4bit_layout_shim("0.49.0")
    assert compat.needs_cpu_4bit_layout_shim(bnb.__version__)  # the pinned 0.50.2
