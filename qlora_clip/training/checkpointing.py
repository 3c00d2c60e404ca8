"""Mid-run training checkpoints for `--checkpoint_every` / `--resume`.

A checkpoint holds everything the remaining steps depend on: adapter weights, optimizer,
scheduler and gradient-scaler states, the RNG states, the step reached, the losses so far and
the training time so far. It is written to a temporary file and renamed into place, so a run
killed while saving leaves the previous checkpoint intact.

A resumed run must continue exactly, so a damaged checkpoint is refused, never trusted: the file
is one header line with the SHA-256 and length of the payload, then the payload (torch.save of
plain tensors, numbers, strings, lists and dicts). The payload is read with torch.load's
`weights_only=True`, which refuses anything else: --checkpoint_dir may be shared, and unpickling
arbitrary objects would run whatever code a crafted file names.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import random
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from qlora_clip.errors import UserError

log = logging.getLogger(__name__)


FORMAT = 1
_HEADER = re.compile(rb"qlora-clip train state v(?P<version>\d+) sha256=(?P<sha256>[0-9a-f]{64}) "
                     rb"bytes=(?P<bytes>\d+)\n")
_START_OVER = "delete it to start over (or resume from a copy you trust)"


def _rng_state(device: torch.device) -> dict:
    """The generators' states as tensors and plain numbers, which weights_only loading accepts."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def write_checkpoint(path: Path, state: dict) -> None:
    """The header line (format, SHA-256 and length of the payload), then the payload; atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = f"qlora-clip train state v{FORMAT} sha256={hashlib.sha256(payload).hexdigest()} bytes={len(payload)}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.encode())
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict:
    """The state saved at `path`; a UserError saying what is wrong when it is not intact or not plain data."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"--resume: cannot read {path} ({err.strerror or err}); fix its permissions, or "
                        f"{_START_OVER}") from err
    if not data:
        raise UserError(f"--resume: {path} is empty; {_START_OVER}")
    newline = data.find(b"\n")
    header = _HEADER.fullmatch(data[:newline + 1]) if 0 <= newline < 200 else None
    if header is None:
        raise UserError(f"--resume: {path} is not a training state with a checksum (damaged, another file, or "
                        f"written before checkpoints carried one); {_START_OVER}")
    if int(header["version"]) != FORMAT:
        raise UserError(f"--resume: {path} has format v{int(header['version'])}, this version reads "
                        f"v{FORMAT}; {_START_OVER}")
    payload = data[newline + 1:]
    if len(payload) != int(header["bytes"]):
        raise UserError(f"--resume: {path} is truncated or padded ({len(payload):,} bytes after its header, "
                        f"{int(header['bytes']):,} saved); {_START_OVER}")
    if hashlib.sha256(payload).hexdigest().encode() != header["sha256"]:
        raise UserError(f"--resume: {path} is damaged: its content does not match the SHA-256 it was saved "
                        f"with; {_START_OVER}")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as err:
        # weights_only refuses every object but tensors and plain data, before creating any.
        raise UserError(f"--resume: {path} holds something other than tensors and plain data, which is refused "
                        f"unread (loading it could run code); {_START_OVER}") from err
    if not isinstance(state, dict) or not {"step", "fingerprint", "adapter", "rng"} <= state.keys():
        raise UserError(f"--resume: {path} is not a training state of this program; {_START_OVER}")
    return state


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


class TrainCheckpoint:
    """The training state of one run at `path`, saved every `every` steps (0: never).

    `fingerprint`: what makes the run this run (results.comparable_config of its flags); a state
    saved by a run with another fingerprint is refused on resume. `read_fingerprint` completes a saved
    one with the flags it predates, at their defaults (RunSpec.trained_identity_of), so a state saved
    before a flag existed still resumes.
    """

    def __init__(self, path: Path, every: int, fingerprint: dict, device: torch.device,
                 read_fingerprint: Callable[[dict], dict] = dict):
        self.path = Path(path)
        self.every = every
        self.fingerprint = fingerprint
        self.device = device
        self.read_fingerprint = read_fingerprint

    def due(self, step: int, total_steps: int) -> bool:
        return self.every > 0 and step % self.every == 0 and step < total_steps

    def save(self, step: int, model, optimizer, scheduler, scaler, losses: list[float], seconds: float) -> None:
        state = {
            "step": step, "losses": list(losses), "seconds": seconds, "fingerprint": self.fingerprint,
            "adapter": trainable_state(model), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(self.device),
        }
        write_checkpoint(self.path, state)

    def load(self) -> dict | None:
        """The saved state, or None (and a log line) when there is nothing to resume."""
        if not self.path.exists():
            log.info("--resume: no checkpoint at %s; starting from step 0", self.path)
            return None
        state = read_checkpoint(self.path)
        saved = self.read_fingerprint(state["fingerprint"])
        if saved != self.fingerprint:
            changed = sorted(k for k in saved.keys() | self.fingerprint.keys() if saved.get(k) != self.fingerprint.get(k))
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
