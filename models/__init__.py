"""segpipe.models: networks, the registry, model cards, loading and geometry probing.

Nothing here imports ``segpipe.pipeline`` or ``segpipe.flows``.
"""

from .card import ClassInfo, ModelCard, Normalization, NormMethod, default_palette
from .errors import ModelError
from .loading import (
    LoadedModel,
    ModelFormat,
    export_onnx,
    export_program,
    export_torchscript,
    load_model,
    save_checkpoint,
)
from .probe import Geometry, probe_geometry
from .registry import create_model, default_card, list_models
from .tv import TorchvisionArch, TorchvisionSegmenter
from .unet import Padding, UNet

__all__ = [
    "ClassInfo",
    "Geometry",
    "LoadedModel",
    "ModelCard",
    "ModelError",
    "ModelFormat",
    "NormMethod",
    "Normalization",
    "Padding",
    "TorchvisionArch",
    "TorchvisionSegmenter",
    "UNet",
    "create_model",
    "default_card",
    "default_palette",
    "export_onnx",
    "export_program",
    "export_torchscript",
    "list_models",
    "load_model",
    "probe_geometry",
    "save_checkpoint",
]
