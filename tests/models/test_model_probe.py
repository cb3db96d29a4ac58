import pytest
import torch
import torch.nn.functional as F

from segpipe.models import Geometry, ModelError, UNet, create_model, probe_geometry


@pytest.fixture(scope="module")
def valid_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(3, 3, depth=2, base_width=4).eval()


def test_valid_unet_margin_matches_direct_forward(valid_unet):
    geometry = probe_geometry(valid_unet, 3, base=64)
    with torch.inference_mode():
        out = valid_unet(torch.zeros(1, 3, 68, 68))
    assert geometry.margin == (68 - out.shape[-1]) // 2 == 20
    assert (geometry.period, geometry.stride, geometry.valid_residues) == (4, 4, frozenset({0}))
    assert geometry.is_valid(68)
    assert not geometry.is_valid(70)
    assert geometry.fit(65) == 68
    assert geometry.output_size(68) == 28


def test_valid_unet_with_known_stride(valid_unet):
    geometry = probe_geometry(valid_unet, 3, stride=4, base=64)
    assert (geometry.margin, geometry.stride, geometry.period) == (20, 4, 4)


def test_same_unet_margin_zero_residue_zero():
    model = UNet(3, 2, depth=2, base_width=4, padding="same").eval()
    geometry = probe_geometry(model, 3, base=64)
    assert geometry.margin == 0
    assert (geometry.period, geometry.valid_residues) == (4, frozenset({0}))


def test_fcn_margin_zero_all_sizes_valid():
    model = create_model("fcn_resnet50", num_classes=2).eval()
    geometry = probe_geometry(model, 3, stride=8, base=32)
    assert geometry == Geometry(
        margin=0, stride=8, period=1, valid_residues=frozenset({0}), out_channels=2
    )
    assert all(geometry.is_valid(n) for n in range(1, 40))


def test_no_size_works():
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(ModelError, match=r"failed on every probed input size.*boom"):
        probe_geometry(broken, 3, stride=4, base=16)


def test_non_square_output():
    with pytest.raises(ModelError, match="non-square"):
        probe_geometry(lambda x: x[:, :2, 1:, :], 3, stride=4, base=16)


def test_output_larger_than_input():
    with pytest.raises(ModelError, match="larger than its"):
        probe_geometry(lambda x: F.pad(x, (1, 1, 1, 1)), 3, stride=4, base=16)


def test_odd_margin():
    with pytest.raises(ModelError, match="odd"):
        probe_geometry(lambda x: x[:, :, 1:, 1:], 3, stride=4, base=16)


def test_downsampling_output_is_inconsistent():
    # Logits at 1/8 resolution: n − out grows with n, so only one size looks "valid".
    with pytest.raises(ModelError, match="inconsistent"):
        probe_geometry(lambda x: F.avg_pool2d(x, 8), 3, stride=8, base=64)


def test_varying_class_count():
    with pytest.raises(ModelError, match="class counts"):
        probe_geometry(lambda x: x.repeat(1, x.shape[-1] % 2 + 1, 1, 1), 1, stride=2, base=8)


def test_geometry_validation():
    with pytest.raises(ModelError, match="valid_residues"):
        Geometry(margin=0, stride=4, period=4, valid_residues=frozenset({5}), out_channels=2)
    with pytest.raises(ModelError, match="margin"):
        Geometry(margin=-1, stride=4, period=4, valid_residues=frozenset({0}), out_channels=2)
    with pytest.raises(ModelError, match="out_channels=0"):
        Geometry(margin=0, stride=4, period=4, valid_residues=frozenset({0}), out_channels=0)
    geometry = Geometry(
        margin=2, stride=8, period=8, valid_residues=frozenset({1, 5}), out_channels=1
    )
    assert geometry.num_classes == 2
    assert [n for n in range(20) if geometry.is_valid(n)] == [5, 9, 13, 17]
    assert geometry.fit(0) == 5
    with pytest.raises(ModelError, match="use 13"):
        geometry.output_size(10)


@pytest.mark.parametrize(("num_classes", "padding"), [(3, "valid"), (1, "valid"), (5, "same")])
def test_out_channels_matches_an_independent_forward(num_classes, padding):
    torch.manual_seed(0)
    config = {"num_classes": num_classes, "depth": 2, "base_width": 4, "padding": padding}
    model = create_model("unet", **config).eval()
    geometry = probe_geometry(model, 3, stride=4, base=64)
    with torch.inference_mode():  # a size outside the probed window, in a batch of 2
        out = model(torch.rand(2, 3, 92, 92, generator=torch.Generator().manual_seed(1)))
    assert geometry.out_channels == out.shape[1] == num_classes
    assert geometry.num_classes == max(num_classes, 2)


def test_single_logit_model_has_two_classes():
    conv = torch.nn.Conv2d(3, 1, kernel_size=3).eval()  # valid 3×3: margin 1, K = 1
    geometry = probe_geometry(conv, 3, stride=2, base=16)
    assert (geometry.margin, geometry.out_channels, geometry.num_classes) == (1, 1, 2)


def test_class_count_changing_at_the_confirmation_size():
    # Only side 16 works in the window 16..19, so side 20 is run to confirm: K changes there.
    def model(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        if n % 4:
            raise RuntimeError("size not supported")
        return x[:, : (1 if n == 16 else 2)]

    with pytest.raises(ModelError, match=r"class counts \[1, 2\]"):
        probe_geometry(model, 3, stride=4, base=16)
