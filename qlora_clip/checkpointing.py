"""Mid-run training checkpoints for `--checkpoint_every` / `--resume`.

A checkpoint holds everything the remaining steps depend on: adapter weights, optimizer,
scheduler and gradient-scaler states, the RNG states, the step reached, the losses so far and
the training time so far. It is written to a temporary file and renamed into place, so a run
killed while saving leaves the previous checkpoint intact.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from qlora_clip.errors import UserError

log = logging.getLogger(__name__)


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


class TrainCheckpoint:
    """The training state of one run at `path`, saved every `every` steps (0: never).

    `fingerprint`: what makes the run this run (results.comparable_config of its flags); a state
    saved by a run with another fingerprint is refused on resume.
    """

    def __init__(self, path: Path, every: int, fingerprint: dict, device: torch.device):
        self.path = Path(path)
        self.every = every
        self.fingerprint = fingerprint
        self.device = device

    def due(self, step: int, total_steps: int) -> bool:
        return self.every > 0 and step % self.every == 0 and step < total_steps

    def save(self, step: int, model, optimizer, scheduler, scaler, losses: list[float], seconds: float) -> None:
        state = {
            "step": step, "losses": list(losses), "seconds": seconds, "fingerprint": self.fingerprint,
            "adapter": trainable_state(model), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(self.device),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def load(self) -> dict | None:
        """The saved state, or None (and a log line) when there is nothing to resume."""
        if not self.path.exists():
            log.info("--resume: no checkpoint at %s; starting from step 0", self.path)
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state["fingerprint"] != self.fingerprint:
            changed = sorted(k for k in self.fingerprint if state["fingerprint"].get(k) != self.fingerprint[k])
            raise UserError(f"--resume: {self.path} was written by a run with different "
                            f"{', '.join('--' + k for k in changed)}; resume with the same flags, or delete it "
                            "to start over")
        return state

    def restore(self, state: dict, model, optimizer, scheduler, scaler) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state["adapter"].items():
                params[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], self.device)
        log.info("resumed from %s at step %d", self.path, state["step"])
