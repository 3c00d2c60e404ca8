"""Reading the adapter a run saved (--save_path), for tests that compare two runs' trained weights."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    found = list(folder.rglob("adapter_model.safetensors"))
    assert len(found) == 1, found
    return load_file(found[0])


def assert_same_adapters(a: Path, b: Path, exact: bool) -> None:
    ta, tb = adapter_tensors(a), adapter_tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        if exact:
            assert torch.equal(ta[key], tb[key]), key
        else:
            torch.testing.assert_close(ta[key], tb[key], rtol=1e-3, atol=1e-5)


def saved_adapter(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    [path] = list(folder.rglob("adapter_model.safetensors"))
    return load_file(path)
