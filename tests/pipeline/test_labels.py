"""Logits to labels on the block path: NumPy's argmax over channels-last logits and the
finiteness check by two reductions give what torch's argmax and ``np.isfinite`` give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segpipe.pipeline.labels import all_finite, label_array


def logits_with_ties(classes: int, seed: int) -> torch.Tensor:
    """(K, 40, 56) logits of few distinct values, so equal maxima are frequent."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (classes, 40, 56), generator=g).float()


@pytest.mark.parametrize("classes", [1, 2, 4, 7])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "cropped_channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_label_array_equals_the_first_maximum(classes, layout, dtype):
    values = logits_with_ties(classes, seed=classes).to(dtype)
    if layout != "nchw":
        values = values[None].contiguous(memory_format=torch.channels_last)[0]
    if layout == "cropped_channels_last":
        values = values[:, 3:37, 5:50]
    plain = values.float().numpy()  # the oracle: NumPy on a contiguous copy, first maximum
    expected = (plain[0] > 0) if classes == 1 else np.argmax(plain, axis=0)
    got = label_array(values, np.uint8)
    assert got.dtype == np.uint8
    assert np.array_equal(got, expected.astype(np.uint8))
    if classes > 2:  # ties exist, so a last-maximum rule would fail here
        top = plain.max(axis=0)
        assert ((plain == top).sum(axis=0) > 1).any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_all_finite_finds_one_bad_logit(bad, layout):
    values = torch.randn(4, 3, 64, 64)
    if layout == "channels_last":
        values = values.contiguous(memory_format=torch.channels_last)
    assert all_finite(values) == bool(np.isfinite(values.numpy()).all())
    values[2, 1, 17, 40] = float(bad)
    assert all_finite(values) == bool(np.isfinite(values.numpy()).all()) is False
    assert all_finite(torch.empty(0, 3, 8, 8))
