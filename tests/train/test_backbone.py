"""``--backbone-weights``: a local classification state_dict starts a torchvision backbone."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import mobilenet_v3_large

from segpipe.models import create_model
from segpipe.models.foundation import InputError
from segpipe.pipeline.train.backbone import load_backbone_weights


def test_mobilenet_classification_weights_fill_the_lraspp_backbone(tmp_path):
    torch.manual_seed(5)
    source = mobilenet_v3_large(weights=None).state_dict()  # as torchvision publishes them
    path = tmp_path / "mobilenet.pth"
    torch.save(source, path)
    model = create_model("lraspp_mobilenet_v3_large", in_channels=4, num_classes=3)
    report = load_backbone_weights(model, str(path))
    backbone = model.net.backbone.state_dict()
    # "features.N..." in the file is "N..." in the backbone; the 3-band first conv is skipped
    assert report.skipped == ("0.0.weight",)
    assert all(k.startswith("classifier.") for k in report.unexpected)
    assert report.missing == ("0.0.weight",)
    for key, value in source.items():
        name = key.removeprefix("features.")
        if key.startswith("features.") and name != "0.0.weight":
            assert torch.equal(backbone[name], value), name
    assert "loaded" in report.line() and "skipped for shape 1" in report.line()


def test_only_torchvision_networks_take_backbone_weights(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(InputError, match="torchvision networks"):
        load_backbone_weights(create_model("unet", depth=1, base_width=2), str(path))
