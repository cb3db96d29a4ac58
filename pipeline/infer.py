"""Running a loaded model on batches of tiles, on CPU or CUDA.

On CUDA the host batch is pinned and copied without blocking, so the CPU prepares the next batch
while the GPU runs the current one; bf16 autocast is used on request. Nothing here knows about
tiles or files: it turns float32 arrays (N, C, S, S) into logits (N, K, s, s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segpipe.models.errors import InputError
from segpipe.models.loading import resolve_device

__all__ = ["InferenceOptions", "Runner", "labels_from_logits", "resolve_device"]

NODATA_U8 = 255
NODATA_U16 = 65535


@dataclass(frozen=True)
class InferenceOptions:
    """How to run the model: batch size, device and bf16 autocast (CUDA only)."""

    batch_size: int = 4
    device: str = "auto"
    bf16: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")


class Runner:
    """Calls ``model`` on host batches; returns logits on the model's device."""

    def __init__(self, model, device: torch.device, *, bf16: bool = False) -> None:
        self.model = model
        self.device = device
        self.autocast = bf16 and device.type == "cuda"

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        """Logits (N, K, s, s) float32 for the float32 inputs ``batch`` (N, C, S, S)."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(
            "cuda", dtype=torch.bfloat16, enabled=self.autocast
        ):
            out = self.model(x)
        if out.ndim != 4 or out.shape[0] != x.shape[0]:
            raise InputError(
                f"the model returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
                "segpipe needs logits N×K×H×W"
            )
        return out.float()


def label_dtype(num_classes: int) -> np.dtype:
    """uint8 up to 254 classes (255 is nodata), uint16 beyond (65535 is nodata)."""
    return np.dtype(np.uint8 if num_classes <= 254 else np.uint16)


def nodata_label(num_classes: int) -> int:
    """The label written where the input is nodata."""
    return NODATA_U8 if label_dtype(num_classes) == np.uint8 else NODATA_U16


def labels_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Class labels from logits (..., K, h, w): argmax for K ≥ 2, ``logit > 0`` for K = 1."""
    if logits.shape[-3] == 1:
        return (logits[..., 0, :, :] > 0).to(torch.int64)
    return logits.argmax(dim=-3)


def probabilities_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities: softmax over K ≥ 2, sigmoid for K = 1."""
    if logits.shape[-3] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=-3)
