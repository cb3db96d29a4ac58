"""Whole-image oracles that use no segpipe code: an eager network, numpy padding, argmax.

The caller gives the network's margin and a valid input side it measured with a direct forward
pass; the oracle pads the whole image with numpy's ``symmetric`` mode (the margin on the
top/left, enough on the bottom/right for a size the network accepts), runs the network once and
crops back to the image.
"""

from __future__ import annotations

import numpy as np
import torch


def forward_side(net, channels: int, n: int) -> int | None:
    """The output side of ``net`` for an n×n input of zeros, None when it fails."""
    try:
        with torch.inference_mode():
            return int(net(torch.zeros(1, channels, n, n)).shape[-1])
    except RuntimeError:
        return None


def valid_side(net, channels: int, n: int, margin: int, period: int) -> int:
    """The smallest side >= n that ``net`` takes and crops by ``margin`` on every side.

    ``period`` bounds the search: one of every ``period`` consecutive sides is valid.
    """
    for k in range(n, n + period):
        if forward_side(net, channels, k) == k - 2 * margin:
            return k
    raise AssertionError(f"no side in {n}..{n + period - 1} crops {margin} px per side")


def whole_image_labels(
    net, image: np.ndarray, margin: int, period: int, *, halo: int | None = None
) -> np.ndarray:
    """Labels of one forward pass over the whole mirror-extended float32 ``image`` (C, H, W).

    ``halo`` (default: the margin) is the padding on the top/left; the network's margin is
    cropped, so the labels start at the image's first pixel.
    """
    halo = margin if halo is None else halo
    c, h, w = image.shape
    bottom = valid_side(net, c, h + 2 * halo, margin, period) - h - halo
    right = valid_side(net, c, w + 2 * halo, margin, period) - w - halo
    ext = np.pad(image, ((0, 0), (halo, bottom), (halo, right)), mode="symmetric")
    with torch.inference_mode():
        logits = net(torch.from_numpy(np.ascontiguousarray(ext[None], np.float32)))[0]
    top = halo - margin
    return logits[:, top : top + h, top : top + w].argmax(0).numpy()
