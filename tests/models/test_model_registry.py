import pytest

from segpipe.models import ModelError, UNet, create_model, default_card, list_models


def test_list_models():
    names = list_models()
    assert names[0] == "unet"
    assert set(names) == {
        "unet",
        "segnet",
        "fcn_resnet50",
        "fcn_resnet101",
        "deeplabv3_resnet50",
        "deeplabv3_resnet101",
        "deeplabv3_mobilenet_v3_large",
        "lraspp_mobilenet_v3_large",
    }


def test_unknown_name_lists_known_names_and_suggests():
    with pytest.raises(ModelError) as info:
        create_model("unte")
    message = str(info.value)
    assert "did you mean 'unet'" in message
    for name in list_models():
        assert name in message
    assert "\n" not in message


def test_unknown_config_key():
    with pytest.raises(ModelError, match="did you mean 'depth'"):
        create_model("unet", deep=3)
    with pytest.raises(ModelError, match="in_channels, num_classes"):
        create_model("fcn_resnet50", depth=3)


def test_create_unet_with_config():
    model = create_model("unet", in_channels=4, num_classes=3, depth=2, base_width=4)
    assert isinstance(model, UNet)
    assert (model.in_channels, model.num_classes, model.stride) == (4, 3, 4)


def test_default_card():
    card = default_card("unet", in_channels=4, num_classes=3, depth=2, base_width=4)
    assert (card.name, card.bands, card.num_classes, card.stride, card.margin) == (
        "unet",
        4,
        3,
        4,
        20,
    )
    assert card.architecture == {
        "name": "unet",
        "config": {
            "in_channels": 4,
            "num_classes": 3,
            "depth": 2,
            "base_width": 4,
            "batch_norm": False,
            "padding": "valid",
        },
    }
    tv = default_card("deeplabv3_mobilenet_v3_large", num_classes=5)
    assert (tv.stride, tv.margin, tv.bands, tv.num_classes) == (16, 0, 3, 5)
    with pytest.raises(ModelError, match="padding"):
        default_card("unet", padding="full")
