import pytest
import torch

from segpipe.models import TorchvisionSegmenter, create_model
from segpipe.models.tv import TorchvisionArch

STRIDES = {
    "fcn_resnet50": 8,
    "fcn_resnet101": 8,
    "deeplabv3_resnet50": 8,
    "deeplabv3_resnet101": 8,
    "deeplabv3_mobilenet_v3_large": 16,
    "lraspp_mobilenet_v3_large": 16,
}
# Forwards of the ResNet-101 nets are slow on CPU; they are built only.
FORWARD = [n for n in STRIDES if "resnet101" not in n]


@pytest.mark.parametrize("name", list(STRIDES))
def test_builds_without_weights_and_with_any_bands(name):
    for channels in (1, 4):
        model = create_model(name, in_channels=channels, num_classes=3)
        assert isinstance(model, TorchvisionSegmenter)
        assert (model.stride, model.padding) == (STRIDES[name], "same")
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert first.in_channels == channels
        assert not hasattr(model.net, "aux_classifier") or model.net.aux_classifier is None


@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("channels", [1, 4])
def test_forward_returns_nkhw(name, channels):
    model = create_model(name, in_channels=channels, num_classes=3).eval()
    with torch.inference_mode():
        out = model(torch.rand(2, channels, 32, 48))
    assert out.shape == (2, 3, 32, 48)
    assert out.dtype == torch.float32


def test_enum_matches_registry():
    assert {a.value for a in TorchvisionArch} == set(STRIDES)
