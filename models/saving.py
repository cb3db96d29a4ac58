"""Write model files: segpipe checkpoints, exported programs, TorchScript and ONNX.

Every writer publishes its file atomically (:func:`segpipe.models.foundation.atomic_output`):
readers see the complete file or nothing, and a failed write leaves nothing behind. The
formats themselves, and how they are read back, are described in :mod:`segpipe.models.formats`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from .card import ModelCard
from .formats import (
    CARD_FILE,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    ONNX_CARD_KEY,
    first_line,
    program_input_shape,
    torchscript_deprecation,
)
from .foundation import ModelError, atomic_output
from .registry import create_model, resolve_config

__all__ = ["export_onnx", "export_program", "export_torchscript", "save_checkpoint"]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for an export and restore its training flag after."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    architecture: str,
    config: Mapping[str, Any],
    card: ModelCard | None,
) -> None:
    """Write a segpipe checkpoint of a built-in network (weights + how to rebuild + card).

    ``architecture`` is a registry name and ``config`` its keyword arguments; the state_dict
    is checked against ``create_model(architecture, **config)`` before anything is written.
    """
    full = resolve_config(architecture, **dict(config))
    with torch.device("meta"):
        reference = create_model(architecture, **full)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in state_dict.items()}
    if actual != expected:
        wrong = sorted(set(actual.items()) ^ set(expected.items()))[:3]
        raise ModelError(
            f"model weights do not match architecture {architecture!r} with config {full} "
            f"(e.g. {wrong}); pass the architecture and config the model was built with"
        )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "architecture": architecture,
        "config": full,
        "state_dict": state_dict,
        "card": None if card is None else card.to_dict(),
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def _example_input(
    model: nn.Module, card: ModelCard | None, example_size: int | None, in_channels: int | None
) -> Tensor:
    channels = in_channels or (card.bands if card is not None else None)
    channels = channels or getattr(model, "in_channels", None)
    if not isinstance(channels, int) or channels < 1:
        raise ModelError(
            "cannot tell the model's input channels; pass in_channels= or a card with bands"
        )
    if example_size is None:
        fit = getattr(model, "fit_size", None)
        stride = getattr(model, "stride", None) or (card.stride if card else None) or 32
        size = -(-128 // stride) * stride
        example_size = fit(size) if callable(fit) else size
    gen = torch.Generator().manual_seed(0)
    # Batch 2, not 1: torch.export specializes dimensions of size 0 or 1.
    return torch.rand((2, channels, example_size, example_size), generator=gen)


def _export(model: nn.Module, x: Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` with automatic dynamic batch, height and width."""
    auto = torch.export.Dim.AUTO
    dynamic = ({0: auto, 2: auto, 3: auto},)
    try:
        with _eval_mode(model):
            program = torch.export.export(model, (x,), dynamic_shapes=dynamic)
    except Exception as exc:
        raise ModelError(f"torch.export failed for this model ({first_line(exc)})") from exc
    shape = program_input_shape(program)
    # A specialized dimension can still be a SymInt (with a constant expression).
    fixed = [d for d, size in zip("NCHW", shape) if d != "C" and is_concrete_int(size)]
    if fixed:
        raise ModelError(
            f"torch.export fixed the input's {'/'.join(fixed)} to the example "
            f"{list(x.shape)}: the model's forward branches on its input size; "
            "make it size-agnostic so any tile size runs"
        )
    return program


def export_program(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    card: ModelCard | None,
    example_size: int | None = None,
    in_channels: int | None = None,
) -> None:
    """Write ``model`` as a ``torch.export`` program (``.pt2``) with dynamic N, H and W.

    ``example_size`` must be a valid input side for the model (default: 128 rounded up to the
    model's stride, or to the next valid U-Net size); ``in_channels`` defaults to the card's
    bands or the model's ``in_channels`` attribute. The card goes in as ``card.json``.
    """
    program = _export(model, _example_input(model, card, example_size, in_channels))
    extra = {} if card is None else {CARD_FILE: card.to_json()}
    with atomic_output(path) as tmp:
        torch.export.save(program, tmp, extra_files=extra)


def export_torchscript(
    model: nn.Module, path: str | os.PathLike[str], *, card: ModelCard | None
) -> None:
    """Write ``model`` as TorchScript by scripting (never tracing: sizes stay dynamic).

    TorchScript is deprecated since torch 2.14; prefer :func:`export_program`. Kept for users
    and tools that still need it.
    """
    extra = {} if card is None else {CARD_FILE: card.to_json()}
    with torchscript_deprecation():
        try:
            with _eval_mode(model):
                is_scripted = isinstance(model, torch.jit.ScriptModule)
                scripted = model if is_scripted else torch.jit.script(model)
        except Exception as exc:
            raise ModelError(f"torch.jit.script failed for this model ({first_line(exc)})") from exc
        with atomic_output(path) as tmp:
            torch.jit.save(scripted, str(tmp), _extra_files=extra)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    card: ModelCard | None,
    example_size: int | None = None,
    in_channels: int | None = None,
    opset_version: int | None = None,
) -> None:
    """Write ``model`` as ONNX (dynamo exporter) with dynamic batch, height and width.

    The model is first captured with ``torch.export`` (as :func:`export_program`), then
    translated; the card is stored in the metadata property ``segpipe_card``. Input and output
    are named ``input`` and ``logits``; external weights, if the exporter writes any, are
    published beside ``path`` with it.
    """
    program = _export(model, _example_input(model, card, example_size, in_channels))
    try:
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            opset_version=opset_version,
            verbose=False,
        )
    except Exception as exc:
        raise ModelError(f"ONNX export failed for this model ({first_line(exc)})") from exc
    if onnx_program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ModelError("ONNX export returned nothing")
    if card is not None:
        onnx_program.model.metadata_props[ONNX_CARD_KEY] = card.to_json()
    with atomic_output(path) as tmp:
        onnx_program.save(tmp)
