"""qlora_clip/training/precision.py: the compute dtype, autocast and gradient scaler decided once, and a half-precision
run on the CPU end to end."""
from __future__ import annotations

import math

import pytest
import torch
from saved_weights import saved_adapter

import main
from qlora_clip.training.precision import resolve_precision

CPU = torch.device("cpu")


def test_precision_is_decided_once():
    assert resolve_precision("auto", CPU).dtype == torch.float32
    assert resolve_precision("auto", torch.device("cuda")).dtype == torch.float16
    bf16 = resolve_precision("bf16", CPU)
    with bf16.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.is_autocast_enabled("cpu")
    assert not bf16.grad_scaler().is_enabled()
    assert resolve_precision("fp16", CPU).grad_scaler().is_enabled()


@pytest.mark.parametrize("dtype, half", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_precision_trains_end_to_end_under_cpu_autocast(dtype, half, tiny_argv, tmp_path, monkeypatch):
    """--compute_dtype fp16/bf16 on the CPU: base stored in that dtype, autocast in the step, fp32 adapters."""
    autocast_dtypes = []
    real_train = main.train

    def spying_train(adapted, loader, prompts, config, precision, *args, **kwargs):
        with precision.autocast():
            autocast_dtypes.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        layer = adapted.model.base_model.model.vision_model.encoder.layers[0].self_attn.q_proj
        assert layer.base_layer.weight.dtype == precision.dtype
        assert layer.lora_A["default"].weight.dtype == torch.float32
        return real_train(adapted, loader, prompts, config, precision, *args, **kwargs)

    monkeypatch.setattr(main, "train", spying_train)
    run = ["--n_iters", "2", "--lr", "1e-2", "--dropout_rate", "0"]
    full = main.main(tiny_argv(*run, "--compute_dtype", "fp32", "--save_path", str(tmp_path / "fp32")))
    record = main.main(tiny_argv(*run, "--compute_dtype", dtype, "--save_path", str(tmp_path / dtype)))
    assert autocast_dtypes == [None, half]
    assert record["compute_dtype"] == dtype
    assert full["total_steps"] == 8
    assert record["total_steps"] == 8
    assert math.isfinite(record["final_loss"])
    ours, reference = saved_adapter(tmp_path / dtype), saved_adapter(tmp_path / "fp32")
    trained = [k for k in ours if "lora_B" in k]
    assert trained
    assert all(ours[k].abs().sum() > 0 for k in trained)  # B left zero
    assert all(torch.isfinite(ours[k]).all() for k in trained)
    # The same run in lower precision computes something else (AdamW amplifies the difference).
    assert any(not torch.equal(ours[k], reference[k]) for k in ours)
