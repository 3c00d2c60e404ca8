"""The predictions file (--save_predictions): the test set's logits and labels, zero-shot and trained.

One safetensors file per run (run/spec.py's `predictions_path`), beside the results line: tensors
`zero_shot_logits` and `test_logits` (images x classes, float32, the logits the accuracy and the
calibration were computed from, in the test set's order) and `labels` (int64); its metadata
(strings) holds the format, the run's name, the dataset, the class names and each image's source
(JSON lists), so the file stands on its own. No pickle: safetensors holds tensors and strings only.

    from qlora_clip.evaluation.predictions import read_predictions
    p = read_predictions("results/predictions/ViT-B-16/dtd/16shots/seed1/lora.safetensors")
    accuracy = (p.test_logits.argmax(1) == p.labels).float().mean()
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "1"


@dataclass
class Predictions:
    zero_shot_logits: torch.Tensor
    test_logits: torch.Tensor
    labels: torch.Tensor
    metadata: dict

    @property
    def classnames(self) -> list[str]:
        return json.loads(self.metadata["classnames"])

    @property
    def sources(self) -> list[str]:
        return json.loads(self.metadata["sources"])


def write_predictions(path: Path, zero_shot_logits: torch.Tensor, test_logits: torch.Tensor, labels: torch.Tensor,
                      run: str, dataset: str, classnames: list[str], sources: list[str]) -> Path:
    """Write the file (to a temporary name, then renamed into place: a reader never sees half of it)."""
    if not zero_shot_logits.shape == test_logits.shape == (len(labels), len(classnames)):
        raise ValueError(f"logits {tuple(zero_shot_logits.shape)} and {tuple(test_logits.shape)} for {len(labels)} "
                         f"labels and {len(classnames)} classes")
    if len(sources) != len(labels):
        raise ValueError(f"{len(sources)} image sources for {len(labels)} labels")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"zero_shot_logits": zero_shot_logits.detach().float().cpu().contiguous(),
               "test_logits": test_logits.detach().float().cpu().contiguous(),
               "labels": labels.detach().to(torch.int64).cpu().contiguous()}
    metadata = {"format": FORMAT, "run": run, "dataset": dataset, "classnames": json.dumps(classnames),
                "sources": json.dumps([str(s) for s in sources])}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, os.fspath(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def read_predictions(path: str | os.PathLike) -> Predictions:
    with safe_open(os.fspath(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    return Predictions(tensors["zero_shot_logits"], tensors["test_logits"], tensors["labels"], metadata)
