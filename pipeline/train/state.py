"""The training state beside the output, for ``--resume``: weights, optimizer, step, seed.

Written atomically every ``--checkpoint-every`` steps, on Ctrl-C and at the end, as a dict of
tensors, numbers and strings only, so that it loads with ``torch.load(weights_only=True)``.
Randomness needs no saved generator: every step draws from generators seeded by
``(seed, step)`` (:func:`step_generators`), so a resumed run continues exactly where an
uninterrupted one would be. A ``fingerprint`` of everything that shapes the training (data,
network, tiles, loss, seed, learning rate) must match to resume.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segpipe.models.foundation import ResumeError, atomic_output

__all__ = ["TrainState", "load_state", "save_state", "state_path", "step_generators"]

STATE_FORMAT = "segpipe-train-state"
STATE_VERSION = 1


def state_path(output: str | os.PathLike[str]) -> Path:
    """``model.pt`` → ``model.train-state.pt`` beside it."""
    out = Path(output)
    return out.with_name(f"{out.stem}.train-state.pt")


def step_generators(seed: int, step: int) -> np.random.Generator:
    """The numpy generator of step ``step``; also reseeds torch (dropout) from it."""
    rng = np.random.default_rng([seed, step])
    torch.manual_seed(int(rng.integers(2**62)))
    return rng


@dataclass
class TrainState:
    """What a resumed run needs: the step reached, weights, optimizer, losses, fingerprint."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    losses: list[float]
    fingerprint: dict[str, Any]


def save_state(path: Path, state: TrainState) -> None:
    """Write ``state`` atomically."""
    payload = {
        "format": STATE_FORMAT, "version": STATE_VERSION, "step": state.step,
        "model": {k: v.detach().cpu() for k, v in state.model.items()},
        "optimizer": state.optimizer, "losses": torch.tensor(state.losses, dtype=torch.float64),
        "fingerprint": json.dumps(state.fingerprint, sort_keys=True, default=str),
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_state(path: Path, fingerprint: dict[str, Any]) -> TrainState:
    """Read the state at ``path``; refuse it when the training it belongs to differs."""
    if not path.is_file():
        raise ResumeError(f"--resume: no training state {path} to resume from; start without "
                          "--resume")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ResumeError(f"--resume: training state {path} cannot be read ({exc}); start "
                          "again with --overwrite") from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ResumeError(f"--resume: {path} is not a segpipe training state")
    saved = json.loads(payload["fingerprint"])
    fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
    changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if changed:
        detail = "; ".join(f"{k}: {saved.get(k)!r} → {fingerprint.get(k)!r}" for k in changed)
        raise ResumeError(f"--resume: the training differs from the saved one ({detail}); use "
                          "the same options, or --overwrite to start again")
    return TrainState(int(payload["step"]), payload["model"], payload["optimizer"],
                      [float(v) for v in payload["losses"].tolist()], saved)
