import pytest
import torch

from segpipe.models import ModelError, UNet
from segpipe.models.unet import unet_fit_size, unet_margin, unet_output_size


def _forward(model: torch.nn.Module, size: int, channels: int = 1) -> torch.Size:
    with torch.inference_mode():
        return model.eval()(torch.zeros(1, channels, size, size)).shape


def test_valid_depth4_572_gives_388_arithmetic():
    assert unet_output_size(572, depth=4, padding="valid") == 388
    assert unet_margin(depth=4, padding="valid") == 92
    model = UNet(in_channels=1, num_classes=2)
    assert (model.stride, model.padding, model.margin()) == (16, "valid", 92)


def test_valid_depth4_572_gives_388_forward_narrow():
    # The geometry does not depend on the width: a narrow net checks it quickly.
    model = UNet(in_channels=1, num_classes=2, depth=4, base_width=2)
    assert _forward(model, 572) == (1, 2, 388, 388)


@pytest.mark.slow
def test_valid_depth4_572_gives_388_forward_original_width():
    assert _forward(UNet(in_channels=1, num_classes=2), 572) == (1, 2, 388, 388)


def test_valid_sizes_and_fit():
    valid = [n for n in range(40, 80) if unet_output_size(n, depth=2, padding="valid")]
    assert valid == [44, 48, 52, 56, 60, 64, 68, 72, 76]
    assert unet_fit_size(45, depth=2, padding="valid") == 48
    assert unet_fit_size(500, depth=4, padding="valid") == 508
    model = UNet(3, 3, depth=2, base_width=4)
    for n in (44, 45, 52):
        expected = unet_output_size(n, depth=2, padding="valid")
        if expected is not None:
            assert _forward(model, n, 3)[-1] == expected


def test_same_padding_keeps_size_for_multiples_of_stride():
    model = UNet(3, 5, depth=3, base_width=4, padding="same")
    assert (model.stride, model.padding, model.margin()) == (8, "same", 0)
    assert _forward(model, 48, 3) == (1, 5, 48, 48)
    assert unet_output_size(48, depth=3, padding="same") == 48
    assert unet_output_size(44, depth=3, padding="same") is None


def test_batch_norm_variant_runs():
    model = UNet(2, 2, depth=1, base_width=4, batch_norm=True, padding="same")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert _forward(model, 16, 2) == (1, 2, 16, 16)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"padding": "reflect"}, "padding"),
        ({"depth": 0}, "depth"),
        ({"base_width": 2.5}, "base_width"),
        ({"in_channels": True}, "in_channels"),
        ({"batch_norm": "yes"}, "batch_norm"),
    ],
)
def test_bad_config_names_the_parameter(kwargs, word):
    with pytest.raises(ModelError, match=word):
        UNet(**kwargs)
