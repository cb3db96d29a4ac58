"""torchvision segmentation networks (FCN, DeepLabV3, LRASPP) behind one small wrapper.

Always built with ``weights=None, weights_backbone=None``: nothing is ever downloaded; weights
come from a segpipe checkpoint or an exported file. ``aux_loss`` is off. Any number of input
bands is supported by replacing the first convolution. The wrapper's forward returns the
``"out"`` logits (N×K×H×W, bilinearly up-sampled to the input size by torchvision).

Strides, from torchvision's builders: the ResNet backbones use
``replace_stride_with_dilation=[False, True, True]`` (output stride 8); MobileNetV3-Large is
built with ``dilated=True`` and its C5 features have output stride 16 (DeepLabV3 and LRASPP).

Caution for tiling: DeepLabV3's ASPP and LRASPP contain a global average pooling branch, so
their receptive field is the whole input and tiled output cannot equal whole-image output
exactly; use ``--blend gaussian`` and a generous halo with them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from torch import Tensor, nn

from .foundation import ModelError

__all__ = ["TorchvisionArch", "TorchvisionSegmenter"]


class TorchvisionArch(StrEnum):
    """The torchvision segmentation builders segpipe can use."""

    FCN_RESNET50 = "fcn_resnet50"
    FCN_RESNET101 = "fcn_resnet101"
    DEEPLABV3_RESNET50 = "deeplabv3_resnet50"
    DEEPLABV3_RESNET101 = "deeplabv3_resnet101"
    DEEPLABV3_MOBILENET_V3_LARGE = "deeplabv3_mobilenet_v3_large"
    LRASPP_MOBILENET_V3_LARGE = "lraspp_mobilenet_v3_large"


#: Total down-sampling of the backbone features (see the module docstring for the source).
STRIDES: dict[TorchvisionArch, int] = {
    TorchvisionArch.FCN_RESNET50: 8,
    TorchvisionArch.FCN_RESNET101: 8,
    TorchvisionArch.DEEPLABV3_RESNET50: 8,
    TorchvisionArch.DEEPLABV3_RESNET101: 8,
    TorchvisionArch.DEEPLABV3_MOBILENET_V3_LARGE: 16,
    TorchvisionArch.LRASPP_MOBILENET_V3_LARGE: 16,
}


def _replace_first_conv(net: nn.Module, in_channels: int) -> None:
    """Swap the first Conv2d of ``net`` for one with ``in_channels`` inputs (same settings)."""
    for parent in net.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels == in_channels:
                    return
                conv = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    kernel_size=child.kernel_size,  # type: ignore[arg-type]
                    stride=child.stride,  # type: ignore[arg-type]
                    padding=child.padding,  # type: ignore[arg-type]
                    dilation=child.dilation,  # type: ignore[arg-type]
                    groups=child.groups,
                    bias=child.bias is not None,
                    padding_mode=child.padding_mode,
                )
                setattr(parent, child_name, conv)
                return
    raise ModelError("torchvision model has no Conv2d to adapt to in_channels")  # pragma: no cover


class TorchvisionSegmenter(nn.Module):
    """A torchvision segmentation net whose forward returns the ``"out"`` logits tensor.

    Attributes:
        arch: the torchvision builder name.
        stride: output stride of the backbone (8 for ResNet, 16 for MobileNetV3).
        padding: always ``"same"`` (output size equals input size).
        in_channels, num_classes: input bands and output logit channels.

    """

    def __init__(self, arch: str, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        try:
            kind = TorchvisionArch(arch)
        except ValueError:
            known = ", ".join(a.value for a in TorchvisionArch)
            raise ModelError(f"torchvision arch={arch!r} is unknown; use one of {known}") from None
        for key, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(f"{kind.value} {key}={value!r} is invalid; use an integer >= 1")
        from torchvision.models import segmentation  # imported here: it takes a second

        builder = getattr(segmentation, kind.value)
        kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None}
        self.net = builder(num_classes=num_classes, aux_loss=False, **kwargs)
        if in_channels != 3:
            _replace_first_conv(self.net, in_channels)
        self.arch: str = kind.value
        self.stride: int = STRIDES[kind]
        self.padding: str = "same"
        self.in_channels: int = in_channels
        self.num_classes: int = num_classes

    def forward(self, x: Tensor) -> Tensor:
        """Map N×C×H×W input to N×K×H×W logits."""
        return self.net(x)["out"]
