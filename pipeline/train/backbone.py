"""``--backbone-weights``: start a torchvision network's backbone from a local weights file.

Never a download. The file is read with ``torch.load(weights_only=True)``: a state_dict, or a
dict holding one under ``state_dict`` or ``model``. Its keys are matched to the backbone's after
dropping a leading ``module.`` or ``backbone.`` and, for MobileNetV3 classification weights,
``features.``; tensors whose shape differs (a first convolution for other band counts, a
classifier) are skipped. The rest is loaded with ``load_state_dict(strict=False)`` and the
missing, unexpected and skipped keys are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from segpipe.models.foundation import InputError, ModelError
from segpipe.models.tv import TorchvisionSegmenter

__all__ = ["BackboneReport", "load_backbone_weights"]


@dataclass(frozen=True)
class BackboneReport:
    """What loading the backbone weights did."""

    loaded: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    skipped: tuple[str, ...]

    def line(self) -> str:
        """One line for the user."""
        def some(keys: tuple[str, ...]) -> str:
            return f"{len(keys)}" + (f" (e.g. {', '.join(keys[:3])})" if keys else "")

        return (f"backbone weights: {self.loaded} tensors loaded; missing {some(self.missing)}; "
                f"unexpected {some(self.unexpected)}; skipped for shape {some(self.skipped)}")


def _state_dict(path: Path) -> Mapping[str, Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"--backbone-weights {path}: file not found") from None
    except Exception as exc:
        raise ModelError(
            f"--backbone-weights {path} cannot be loaded safely with weights_only=True "
            f"({type(exc).__name__}); give a state_dict file"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ModelError(f"--backbone-weights {path} holds no state_dict of tensors")
    return data


def _match(keys: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys renamed to the backbone's: leading ``module.``/``backbone.``/``features.`` dropped."""
    out: dict[str, Tensor] = {}
    for key, value in keys.items():
        name = key
        for prefix in ("module.", "backbone.", "features."):
            if name.startswith(prefix) and name not in target:
                name = name[len(prefix):]
        out[name] = value
    return out


def load_backbone_weights(model: nn.Module, path: str) -> BackboneReport:
    """Load ``path`` into ``model.net.backbone`` (torchvision networks only)."""
    if not isinstance(model, TorchvisionSegmenter):
        raise InputError("--backbone-weights applies to the torchvision networks (fcn_*, "
                         "deeplabv3_*, lraspp_*); unet and segnet train from scratch")
    backbone = model.net.backbone
    target = backbone.state_dict()
    renamed = _match(_state_dict(Path(path)), target)
    skipped = tuple(sorted(k for k, v in renamed.items()
                           if k in target and tuple(v.shape) != tuple(target[k].shape)))
    usable = {k: v for k, v in renamed.items() if k not in skipped}
    result = backbone.load_state_dict(usable, strict=False)
    loaded = len([k for k in usable if k in target])
    return BackboneReport(loaded, tuple(result.missing_keys), tuple(result.unexpected_keys),
                          skipped)
