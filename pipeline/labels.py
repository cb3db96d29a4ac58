"""From logits to labels and probabilities, and the label type and nodata value of an output.

Labels are uint8 up to 254 classes (255 is nodata) and uint16 beyond (65535 is nodata).
K ≥ 2 logits give the argmax and a softmax; K = 1 gives ``logit > 0`` and a sigmoid.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["label_dtype", "labels_from_logits", "nodata_label", "probabilities_from_logits"]

NODATA_U8 = 255
NODATA_U16 = 65535


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
