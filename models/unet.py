"""The U-Net of Ronneberger, Fischer and Brox (2015).

"U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015.

Per level two 3×3 convolutions with ReLU (optionally BatchNorm), a 2×2 max-pool on the way down,
a 2×2 transposed convolution on the way up, and crop-and-concatenate of the skip connection;
a final 1×1 convolution gives the class logits.

``padding="valid"`` is the original, unpadded network: the output is smaller than the input by a
constant margin on each side (572 → 388 for depth 4), exactly what overlap-tile inference needs.
``padding="same"`` pads every convolution by 1, so the output has the input's size; the input
side must then be a multiple of ``2**depth``.

The forward pass reads all sizes from the tensors at run time, so the network scripts
(TorchScript) and exports (``torch.export``, ONNX) with dynamic height and width.
"""

from __future__ import annotations

from enum import StrEnum

import torch
from torch import Tensor, nn

from .foundation import ModelError

__all__ = [
    "Padding",
    "UNet",
    "check_unet_config",
    "unet_fit_size",
    "unet_margin",
    "unet_output_size",
]


class Padding(StrEnum):
    """How the U-Net convolutions pad: ``valid`` (none, the original) or ``same`` (1 pixel)."""

    VALID = "valid"
    SAME = "same"


def _padding(value: str) -> Padding:
    try:
        return Padding(value)
    except ValueError:
        choices = ", ".join(repr(p.value) for p in Padding)
        raise ModelError(f"unet padding={value!r} is not supported; use one of {choices}") from None


class _DoubleConv(nn.Sequential):
    """Two 3×3 convolutions, each followed by (optional BatchNorm and) ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, pad: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(
                nn.Conv2d(c_in, out_channels, kernel_size=3, padding=pad, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class _Up(nn.Module):
    """Up-sample by a 2×2 transposed convolution, concatenate the center-cropped skip, convolve."""

    def __init__(self, in_channels: int, out_channels: int, *, pad: int, batch_norm: bool) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = _DoubleConv(2 * out_channels, out_channels, pad=pad, batch_norm=batch_norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """Up-sample ``x``, crop ``skip`` to it around the center, concatenate and convolve."""
        x = self.up(x)
        h = x.shape[2]
        w = x.shape[3]
        top = (skip.shape[2] - h) // 2
        left = (skip.shape[3] - w) // 2
        skip = skip.narrow(2, top, h).narrow(3, left, w)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """The original U-Net (Ronneberger et al. 2015) with configurable depth, width and padding.

    Attributes:
        stride: total down-sampling factor, ``2**depth``; tile sizes must respect it.
        padding: ``"valid"`` or ``"same"``.
        depth: number of 2×2 poolings.
        in_channels, num_classes: input bands and output logit channels.

    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        *,
        depth: int = 4,
        base_width: int = 64,
        batch_norm: bool = False,
        padding: str = "valid",
    ) -> None:
        super().__init__()
        check_unet_config(
            in_channels=in_channels,
            num_classes=num_classes,
            depth=depth,
            base_width=base_width,
            batch_norm=batch_norm,
            padding=padding,
        )
        self.padding: str = _padding(padding).value
        self.depth: int = depth
        self.stride: int = 2**depth
        self.in_channels: int = in_channels
        self.num_classes: int = num_classes
        pad = 1 if self.padding == Padding.SAME else 0

        widths = [base_width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c_in = in_channels
        for width in widths[:-1]:
            self.down.append(_DoubleConv(c_in, width, pad=pad, batch_norm=batch_norm))
            c_in = width
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottom = _DoubleConv(widths[-2], widths[-1], pad=pad, batch_norm=batch_norm)
        self.up = nn.ModuleList(
            _Up(widths[i + 1], widths[i], pad=pad, batch_norm=batch_norm)
            for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(base_width, num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Map N×C×H×W float input to N×K×h×w logits (h = H for same, H − 2·margin for valid)."""
        skips: list[Tensor] = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        n = len(skips)
        for i, block in enumerate(self.up):
            x = block(x, skips[n - 1 - i])
        return self.head(x)

    def output_size(self, size: int) -> int | None:
        """Output side for an input side ``size``, or None when ``size`` is not a valid input."""
        return unet_output_size(size, depth=self.depth, padding=self.padding)

    def margin(self) -> int:
        """Pixels lost on each side (0 for same padding): ``(H − h) / 2`` for every valid H."""
        return unet_margin(depth=self.depth, padding=self.padding)

    def fit_size(self, size: int) -> int:
        """Smallest valid input side that is at least ``size``."""
        return unet_fit_size(size, depth=self.depth, padding=self.padding)


def check_unet_config(
    *,
    in_channels: int,
    num_classes: int,
    depth: int,
    base_width: int,
    batch_norm: bool,
    padding: str,
) -> None:
    """Raise :class:`ModelError` naming the first U-Net parameter that is out of range."""
    check_encoder_config(
        "unet", in_channels=in_channels, num_classes=num_classes, depth=depth,
        base_width=base_width, batch_norm=batch_norm,
    )
    _padding(padding)


def check_encoder_config(
    net: str, *, in_channels: int, num_classes: int, depth: int, base_width: int,
    batch_norm: bool,
) -> None:
    """The parameters every encoder-decoder net here shares (U-Net, SegNet), checked."""
    for key, value in (("in_channels", in_channels), ("num_classes", num_classes),
                       ("depth", depth), ("base_width", base_width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(f"{net} {key}={value!r} is invalid; use an integer >= 1")
    if not isinstance(batch_norm, bool):
        raise ModelError(f"{net} batch_norm={batch_norm!r} is invalid; use true or false")


def unet_output_size(size: int, *, depth: int, padding: str) -> int | None:
    """Output side of a U-Net for input side ``size``, or None when ``size`` is not valid.

    Valid means every pooling sees an even size and every stage keeps at least 1 pixel, so the
    network is translation-equivariant with step ``2**depth`` and every crop is centered exactly.
    """
    shrink = 0 if _padding(padding) == Padding.SAME else 4
    n = size
    for _ in range(depth):
        n -= shrink
        if n < 2 or n % 2:
            return None
        n //= 2
    n -= shrink
    if n < 1:
        return None
    for _ in range(depth):
        n = 2 * n - shrink
        if n < 1:
            return None
    return n


def unet_fit_size(size: int, *, depth: int, padding: str) -> int:
    """Smallest valid U-Net input side that is at least ``size``."""
    n = max(int(size), 1)
    while unet_output_size(n, depth=depth, padding=padding) is None:
        n += 1
    return n


def unet_margin(*, depth: int, padding: str) -> int:
    """Pixels a U-Net consumes on each side: 0 for same padding, 92 for valid depth 4."""
    size = unet_fit_size(1, depth=depth, padding=padding)
    out = unet_output_size(size, depth=depth, padding=padding)
    if out is None:  # pragma: no cover - unet_fit_size only returns valid sizes
        raise ModelError(f"unet depth={depth} has no valid input size")
    return (size - out) // 2
