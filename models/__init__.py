"""segpipe.models: networks, the registry, model cards, loading and geometry probing.

Nothing here imports ``segpipe.pipeline`` or ``segpipe.flows``. The names below are imported on
first use (PEP 562), so ``import segpipe.models.card`` or ``segpipe.models.foundation`` does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClassInfo": "card",
    "Domain": "card",
    "ModelCard": "card",
    "NormMethod": "card",
    "Normalization": "card",
    "default_palette": "card",
    "ModelError": "foundation",
    "SegpipeError": "foundation",
    "Precision": "foundation",
    "LoadedModel": "loading",
    "ModelFormat": "formats",
    "load_model": "loading",
    "load_model_cached": "loading",
    "export_onnx": "saving",
    "export_program": "saving",
    "export_torchscript": "saving",
    "save_checkpoint": "saving",
    "Geometry": "probe",
    "probe_geometry": "probe",
    "create_model": "registry",
    "default_card": "registry",
    "list_models": "registry",
    "TorchvisionArch": "tv",
    "TorchvisionSegmenter": "tv",
    "Padding": "unet",
    "UNet": "unet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'segpipe.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return __all__
