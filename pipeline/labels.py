"""From logits to labels and probabilities, and the label type and nodata value of an output.

Labels are uint8 up to 254 classes (255 is nodata) and uint16 beyond (65535 is nodata).
K ≥ 2 logits give the argmax and a softmax; K = 1 gives ``logit > 0`` and a sigmoid.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "all_finite", "label_array", "label_dtype", "labels_from_logits", "nodata_label",
    "probabilities_from_logits",
]

_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)  # bfloat16 has no NumPy type
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


def label_array(logits: torch.Tensor, dtype: np.dtype | type) -> np.ndarray:
    """:func:`labels_from_logits` of one tile's logits (K, h, w), as a NumPy array of ``dtype``.

    On the CPU with the classes as the fastest-moving axis (channels-last, the layout segpipe
    runs models in on a CPU), NumPy's argmax over that axis, read in place: measured 1.7–3×
    faster than torch's argmax over the strided class dim on a 4-class 512² crop (34 vs 59–114
    ms for a batch of 4 on 2 cores), a cost the model's own time does not hide. Elsewhere
    torch's. The same labels: both take the first of equal maxima, and the logits are finite
    (:func:`all_finite` is checked first; a NaN would make them differ).
    """
    if (logits.device.type == "cpu" and logits.shape[0] > 1 and logits.stride(0) == 1
            and logits.dtype in _NUMPY_FLOATS):
        values = logits.detach().permute(1, 2, 0).numpy()
        return values.argmax(axis=-1).astype(dtype, copy=False)
    small = torch.uint8 if np.dtype(dtype) == np.uint8 else torch.int32
    return labels_from_logits(logits).to(small).cpu().numpy().astype(dtype, copy=False)


def all_finite(logits: torch.Tensor) -> bool:
    """Whether every logit is finite: the largest and the smallest are (NaN propagates to both).

    Two reductions, no boolean tensor the size of the logits: measured 13 ms against 48–67 ms
    for ``torch.isfinite(logits).all()`` on a batch of 4 × 4 × 576² on 2 cores.
    """
    if logits.numel() == 0:
        return True
    return bool(torch.isfinite(logits.amax()) & torch.isfinite(logits.amin()))


def probabilities_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities: softmax over K ≥ 2, sigmoid for K = 1."""
    if logits.shape[-3] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=-3)
