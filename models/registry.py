"""The registry of built-in networks: names → builders, their config keys and default cards.

``create_model("unet", in_channels=4, num_classes=3, depth=3)`` builds a randomly initialised
network; weights come from a checkpoint (:func:`segpipe.models.saving.save_checkpoint`).
"""

from __future__ import annotations

import difflib
from types import MappingProxyType
from typing import Any

from torch import nn

from .card import ModelCard
from .foundation import ModelError
from .segnet import SegNet, check_segnet_config, segnet_halo
from .tv import STRIDES, TorchvisionArch, TorchvisionSegmenter
from .unet import UNet, check_unet_config, unet_margin

__all__ = ["create_model", "default_card", "list_models", "resolve_config"]

_COMMON = MappingProxyType({"in_channels": 3, "num_classes": 2})
_UNET = MappingProxyType(
    {**_COMMON, "depth": 4, "base_width": 64, "batch_norm": False, "padding": "valid"}
)
_SEGNET = MappingProxyType({**_COMMON, "depth": 4, "base_width": 64, "batch_norm": True})

#: Default configuration per model name; the keys are the accepted config keys.
DEFAULTS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {"unet": _UNET, "segnet": _SEGNET, **{arch.value: _COMMON for arch in TorchvisionArch}}
)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, in a stable order."""
    return list(DEFAULTS)


def _check_name(name: str) -> str:
    if isinstance(name, str) and name in DEFAULTS:
        return name
    close = difflib.get_close_matches(str(name), list(DEFAULTS), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ModelError(f"model name {name!r} is unknown; {hint}known models: {', '.join(DEFAULTS)}")


def resolve_config(name: str, **config: Any) -> dict[str, Any]:
    """Return the full config for ``name``: defaults updated by ``config``; unknown keys refused."""
    defaults = DEFAULTS[_check_name(name)]
    for key in config:
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ModelError(
                f"config key {key!r} is not accepted by model {name!r}; {hint}"
                f"accepted keys: {', '.join(defaults)}"
            )
    return {**defaults, **config}


def create_model(name: str, **config: Any) -> nn.Module:
    """Build the built-in network ``name`` with random weights.

    Config keys: ``in_channels`` and ``num_classes`` for every model; ``depth``,
    ``base_width``, ``batch_norm`` and ``padding`` for ``unet``; ``depth``, ``base_width`` and
    ``batch_norm`` for ``segnet``. Unknown names or keys raise
    :class:`ModelError` listing what is accepted.
    """
    full = resolve_config(name, **config)
    if name == "unet":
        return UNet(**full)
    if name == "segnet":
        return SegNet(**full)
    return TorchvisionSegmenter(name, **full)


def default_card(name: str, **config: Any) -> ModelCard:
    """Build the card of a built-in network: architecture and geometry filled in, default classes.

    Normalization is ``scale``; classes are ``class_0 ..``. SegNet's card carries its
    receptive-field radius as the halo (tiled labels then equal whole-image labels). Pass a
    different card to the writers in :mod:`segpipe.models.saving` for a trained model.
    """
    full = resolve_config(name, **config)
    halo = None
    if name == "unet":
        check_unet_config(**full)
        margin = unet_margin(depth=full["depth"], padding=full["padding"])
        stride = 2 ** full["depth"]
    elif name == "segnet":
        check_segnet_config(**full)
        margin, stride, halo = 0, 2 ** full["depth"], segnet_halo(full["depth"])
    else:
        margin, stride = 0, STRIDES[TorchvisionArch(name)]
    return ModelCard.default(
        name,
        full["in_channels"],
        full["num_classes"],
        margin=margin,
        halo=halo,
        stride=stride,
        architecture={"name": name, "config": full},
    )
