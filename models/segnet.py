"""SegNet (Badrinarayanan, Kendall and Cipolla 2017), small and configurable.

"SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image Segmentation", IEEE TPAMI
39(12), 2017.

Each encoder level applies two 3×3 convolutions (same padding) with BatchNorm and ReLU, then a
2×2 max-pool that *remembers the position* of each maximum. The decoder mirrors the encoder:
each level up-samples with :class:`torch.nn.MaxUnpool2d` using the pooling indices of the
matching encoder level (the values go back where the maxima were, zeros elsewhere), then two 3×3
convolutions densify the sparse map. There are no skip concatenations: the indices are the only
thing the decoder takes from the encoder. A final 1×1 convolution gives the class logits. The
original uses a VGG16 encoder (depth 5, widths 64..512); here ``depth`` and ``base_width`` set
the size (widths ``base_width·2**l``, capped at 8·``base_width`` as in VGG).

Geometry: the output has the input's size; the input side must be a multiple of
``stride = 2**depth`` (every pooling sees an even size, and pooling windows start on the same
grid whatever the tile). For tiles anchored at multiples of the stride, the network is
translation-equivariant, so with a halo of at least :func:`segnet_halo` (its receptive-field
radius, pooling windows and unpooling indices included) tiled labels equal whole-image labels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .unet import check_encoder_config

__all__ = ["SegNet", "check_segnet_config", "segnet_halo"]

#: 3×3 convolutions per encoder (and decoder) level.
CONVS_PER_LEVEL = 2


def _conv_block(c_in: int, c_out: int, batch_norm: bool) -> nn.Sequential:
    """3×3 convolutions (same padding), each with (optional BatchNorm and) ReLU."""
    layers: list[nn.Module] = []
    for i in range(CONVS_PER_LEVEL):
        layers.append(nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1,
                                bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SegNet(nn.Module):
    """SegNet with ``depth`` pool/unpool levels; output N×K×H×W for H, W multiples of 2**depth.

    Attributes:
        stride: ``2**depth``; input sides (and tile sizes) must be multiples of it.
        padding: always ``"same"``.
        depth, in_channels, num_classes: as built.

    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        *,
        depth: int = 4,
        base_width: int = 64,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        check_segnet_config(in_channels=in_channels, num_classes=num_classes, depth=depth,
                            base_width=base_width, batch_norm=batch_norm)
        self.depth: int = depth
        self.stride: int = 2**depth
        self.padding: str = "same"
        self.in_channels: int = in_channels
        self.num_classes: int = num_classes
        widths = [base_width * 2 ** min(level, 3) for level in range(depth)]
        self.encoder = nn.ModuleList(
            _conv_block(c_in, c_out, batch_norm)
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths)
        )
        # Decoder level l (deepest first) maps widths[l] back to widths[l - 1].
        self.decoder = nn.ModuleList(
            _conv_block(widths[level], widths[max(level - 1, 0)], batch_norm)
            for level in reversed(range(depth))
        )
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Map N×C×H×W float input to N×K×H×W logits (H, W multiples of ``stride``)."""
        torch._check(x.shape[2] % self.stride == 0, lambda: self._size_message(x))
        torch._check(x.shape[3] % self.stride == 0, lambda: self._size_message(x))
        indices: list[Tensor] = []
        for block in self.encoder:
            x, idx = self.pool(block(x))
            indices.append(idx)
        for i, block in enumerate(self.decoder):
            x = block(self.unpool(x, indices[len(indices) - 1 - i]))
        return self.head(x)

    def _size_message(self, x: Tensor) -> str:
        return (
            f"segnet input {x.shape[2]}×{x.shape[3]} is invalid; height and width must be "
            f"multiples of the stride {self.stride}"
        )

    def fit_size(self, size: int) -> int:
        """Smallest valid input side that is at least ``size`` (a multiple of the stride)."""
        return -(-max(int(size), 1) // self.stride) * self.stride

    def halo(self) -> int:
        """The receptive-field radius: the halo that makes tiled output exact."""
        return segnet_halo(self.depth)


def check_segnet_config(
    *, in_channels: int, num_classes: int, depth: int, base_width: int, batch_norm: bool
) -> None:
    """Raise :class:`ModelError` naming the first SegNet parameter that is out of range."""
    check_encoder_config(
        "segnet", in_channels=in_channels, num_classes=num_classes, depth=depth,
        base_width=base_width, batch_norm=batch_norm,
    )


def segnet_halo(depth: int) -> int:
    """Receptive-field radius of a SegNet of ``depth`` levels, in input pixels.

    Interval arithmetic along the network, backwards from one output pixel ``p``: a 3×3
    convolution at level ``l`` widens the interval of level-``l`` indices by 1 on each side;
    unpooling (and pooling, on the way back through the encoder) maps index ``i`` at level ``l``
    to ``i // 2`` at level ``l + 1`` and back to ``2i, 2i + 1``. The unpooling indices depend on
    encoder features that this path already covers. The radius is the farthest input pixel over
    every position of ``p`` modulo ``2**depth`` (the pooling grid).
    """
    radius = 0
    for p in range(2**depth):
        lo, hi = p, p
        for _ in range(depth):  # decoder, from the output down: convolutions, then unpooling
            lo, hi = (lo - CONVS_PER_LEVEL) // 2, (hi + CONVS_PER_LEVEL) // 2
        for _ in range(depth):  # encoder, from the bottom up: pooling, then convolutions
            lo, hi = 2 * lo - CONVS_PER_LEVEL, 2 * hi + 1 + CONVS_PER_LEVEL
        radius = max(radius, p - lo, hi - p)
    return radius
