"""Confusion matrices and the scores read from them: per-class IoU and overall accuracy.

Rows are the reference class, columns the predicted (map) class, as in Olofsson et al. (2014)
with the map on the rows transposed: ``cm[i, j]`` counts pixels of reference class ``i``
labelled ``j``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "confusion_matrix", "iou"]


def confusion_matrix(reference: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """The k×k counts of (reference, predicted) pairs; both hold values in 0..k−1."""
    pairs = reference.astype(np.int64).ravel() * k + predicted.astype(np.int64).ravel()
    return np.bincount(pairs, minlength=k * k).reshape(k, k)


def iou(cm: np.ndarray) -> np.ndarray:
    """Per-class intersection over union ``TP / (TP + FP + FN)``; NaN for absent classes."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def accuracy(cm: np.ndarray) -> float:
    """Overall accuracy: the fraction of pixels on the diagonal (NaN for an empty matrix)."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")
