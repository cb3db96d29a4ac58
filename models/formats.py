"""Model file formats: recognise a file by its content, read it, find its card.

Formats, recognised by content (zip members) and extension:

- exported program (``torch.export``, ``.pt2``): the card is the ``card.json`` extra file;
- TorchScript (``.pt``/``.ts``; deprecated since torch 2.14 but common): ``card.json`` extra file;
- segpipe checkpoint (``.pt``/``.pth``/``.ckpt``): a dict ``{"format": "segpipe-checkpoint",
  "version": 1, "architecture", "config", "state_dict", "card"}``, read only with
  ``torch.load(..., weights_only=True)`` and rebuilt with :func:`create_model`;
- ONNX (``.onnx``) through onnxruntime: the card is the ``segpipe_card`` metadata property;
- a registry name such as ``"unet"``: a fresh network with random weights seeded by
  ``torch.manual_seed(0)`` and the default card. For demos and tests only: it segments nothing.

A sidecar ``<stem>.json`` card next to a model file is used when the file has no card of its own
(:func:`sidecar_card`). Model files are data: nothing in them runs while they load. Checkpoints
are read with ``weights_only=True``; TorchScript by TorchScript's own loader (tensors and
TorchScript classes only); ONNX by onnxruntime; an exported program is checked by
:func:`segpipe.models.dataonly.check_exported_program` before ``torch.export.load`` sees it.
A model's forward pass is code all the same: run models from sources you trust. Writers:
:mod:`segpipe.models.saving`; the object that runs a loaded model: ``loading.LoadedModel``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pickle
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from .card import ModelCard
from .dataonly import check_exported_program, pickle_refusal
from .foundation import ModelError
from .registry import create_model, default_card, resolve_config

__all__ = [
    "CARD_FILE",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "ONNX_CARD_KEY",
    "Forward",
    "ModelFormat",
    "ModelParts",
    "checkpoint_card",
    "detect_format",
    "first_line",
    "load_builtin",
    "load_file",
    "program_input_shape",
    "sidecar_card",
    "torchscript_deprecation",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "segpipe-checkpoint"
CHECKPOINT_VERSION = 1
CARD_FILE = "card.json"
ONNX_CARD_KEY = "segpipe_card"
_CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".bin"})
_PICKLE_PROTOCOL_2 = b"\x80\x02"
_ZIP_START = b"PK\x03\x04"

#: The bare forward pass of a loaded model: float32 N×C×H×W in, N×K×h×w logits out.
Forward = Callable[[Tensor], Tensor]


class ModelFormat(StrEnum):
    """How a model is stored."""

    EXPORTED = "exported"
    TORCHSCRIPT = "torchscript"
    CHECKPOINT = "checkpoint"
    ONNX = "onnx"
    BUILTIN = "builtin"


class ModelParts(NamedTuple):
    """What a format reader returns: the forward pass, the embedded card, the input channels.

    ``fixed_size``: the one input side the model takes (an ONNX graph with static H = W), else
    None (any size the network accepts).
    """

    forward: Forward
    card: ModelCard | None
    in_channels: int | None
    fixed_size: int | None = None


# ------------------------------------------------------------------------------- detection


def detect_format(path: Path) -> ModelFormat:
    """The format of the model file ``path``, from its content (zip members) and extension."""
    if zipfile.is_zipfile(path):
        return _zip_format(path)
    with open(path, "rb") as handle:
        start = handle.read(4)
    if start == _ZIP_START:  # a zip archive whose end (its table of contents) is missing
        raise ModelError(
            f"model file {path.name!r} is truncated or damaged: it starts like a zip archive "
            "(.pt2, TorchScript, checkpoint) but its end is missing; copy it again or save it "
            "again"
        )
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return ModelFormat.ONNX
    if suffix in _CHECKPOINT_SUFFIXES:
        with open(path, "rb") as handle:
            if handle.read(2) == _PICKLE_PROTOCOL_2:  # the legacy (pre-zip) torch.save format
                return ModelFormat.CHECKPOINT
    raise ModelError(
        f"model file {path.name!r} is not a recognised model: expected an exported program "
        "(.pt2), TorchScript (.pt/.ts), a segpipe checkpoint (.pt/.pth/.ckpt) or ONNX (.onnx)"
    )


def _zip_format(path: Path) -> ModelFormat:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelError(f"model file {path.name!r} is a damaged archive ({exc})") from None
    members = {name.split("/", 1)[-1] for name in names}
    if "archive_format" in members or any(m.startswith("models/") for m in members):
        return ModelFormat.EXPORTED
    if any(m.startswith("code/") for m in members) or "constants.pkl" in members:
        return ModelFormat.TORCHSCRIPT
    if "data.pkl" in members:
        return ModelFormat.CHECKPOINT
    raise ModelError(
        f"model file {path.name!r} is a zip archive but not an exported program, TorchScript "
        "file or torch checkpoint"
    )


def load_file(path: Path, kind: ModelFormat, device: torch.device) -> ModelParts:
    """Read the model file ``path`` of format ``kind`` onto ``device``."""
    readers: dict[ModelFormat, Callable[[Path, torch.device], ModelParts]] = {
        ModelFormat.EXPORTED: _load_exported,
        ModelFormat.TORCHSCRIPT: _load_torchscript,
        ModelFormat.CHECKPOINT: _load_checkpoint,
        ModelFormat.ONNX: _load_onnx,
    }
    return readers[kind](path, device)


# ----------------------------------------------------------------------------------- cards


def _parse_card(text: str | bytes | None, where: str) -> ModelCard | None:
    if text is None or not text:
        return None
    try:
        return ModelCard.from_json(text)
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from None


def sidecar_card(path: Path) -> ModelCard | None:
    """The card in ``<stem>.json`` beside the model file ``path``, or None when there is none."""
    sidecar = path.with_suffix(".json")
    if sidecar == path or not sidecar.is_file():
        return None
    try:
        text = sidecar.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"sidecar card {sidecar.name!r} cannot be read ({exc})") from None
    return _parse_card(text, f"sidecar card {sidecar.name!r}")


# --------------------------------------------------------------------------------- helpers


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for one-line error messages."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _conv_in_channels(module: nn.Module) -> int | None:
    """In-channels of the first 4-D weight (the first convolution), or None."""
    for param in module.parameters():
        return int(param.shape[1]) if param.ndim == 4 else None
    return None


class _Eager:
    """A PyTorch module's forward pass on ``device`` (the module stays reachable)."""

    def __init__(self, module: Forward, device: torch.device) -> None:
        self.module = module
        self.device = device

    def __call__(self, x: Tensor) -> Tensor:
        return self.module(x.to(self.device))


def _eager(module: Forward, device: torch.device) -> Forward:
    return _Eager(module, device)


def program_input_shape(program: torch.export.ExportedProgram) -> tuple[Any, ...]:
    """Shape of the exported program's first user input (ints or symbolic sizes)."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            return tuple(getattr(node.meta.get("val"), "shape", ()))
    return ()


@contextlib.contextmanager
def torchscript_deprecation() -> Iterator[None]:
    """Silence torch's per-call TorchScript FutureWarnings; log one warning instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    if any("deprecated" in str(w.message) for w in caught):
        log.warning(
            "TorchScript is deprecated since torch 2.14; prefer an exported program (.pt2) "
            "written by segpipe.models.export_program"
        )


# --------------------------------------------------------------------------------- readers


def _state_dict_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """Digest of names, dtypes, shapes and raw bytes of every tensor, in order."""
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_builtin(name: str, device: torch.device) -> tuple[ModelParts, str]:
    """Build registry model ``name`` seeded with 0 (the caller's RNG untouched); + weights hash."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = create_model(name).eval().to(device)
    card = default_card(name)
    parts = ModelParts(_eager(module, device), card, card.bands)
    return parts, _state_dict_sha256(module.state_dict())


def _load_exported(path: Path, device: torch.device) -> ModelParts:
    check_exported_program(str(path))  # nothing in it may run code while torch loads it
    extra: dict[str, Any] = {CARD_FILE: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
        if device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        module = program.module()
    except Exception as exc:
        raise ModelError(
            f"exported program {path.name!r} cannot be loaded ({first_line(exc)}); re-export "
            "it with this torch version (segpipe.models.export_program)"
        ) from None
    card = _parse_card(extra.get(CARD_FILE), f"card in {path.name!r}")
    shape = program_input_shape(program)
    channels = int(shape[1]) if len(shape) == 4 and is_concrete_int(shape[1]) else None
    return ModelParts(_eager(module, device), card, channels)


def _load_torchscript(path: Path, device: torch.device) -> ModelParts:
    extra: dict[str, Any] = {CARD_FILE: ""}
    try:
        with torchscript_deprecation():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:
        raise ModelError(
            f"TorchScript file {path.name!r} cannot be loaded ({first_line(exc)}); save it "
            "again with torch.jit.save, or export the model (segpipe.models.export_program)"
        ) from None
    module.eval()
    raw = extra.get(CARD_FILE)
    card = _parse_card(
        raw.decode("utf-8") if isinstance(raw, bytes) else raw, f"card in {path.name!r}"
    )
    return ModelParts(_eager(module, device), card, _conv_in_channels(module))


def _checkpoint_payload(path: Path) -> Mapping[str, Any]:
    """Read a checkpoint safely and check it is a segpipe checkpoint of the version we read."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused an object: it would run code
        raise pickle_refusal(path.name, exc) from None
    except Exception as exc:
        raise ModelError(
            f"checkpoint {path.name!r} cannot be loaded safely with weights_only=True "
            f"({first_line(exc)}); re-save it with segpipe.models.save_checkpoint"
        ) from None
    if not isinstance(payload, Mapping):
        raise ModelError(
            f"checkpoint {path.name!r} holds a {type(payload).__name__}, not a segpipe "
            "checkpoint dict; re-save it with segpipe.models.save_checkpoint"
        )
    if payload.get("format") != CHECKPOINT_FORMAT or "architecture" not in payload:
        if payload and all(isinstance(v, Tensor) for v in payload.values()):
            what = "a bare state_dict"
        else:
            what = f"a dict with keys {sorted(map(str, payload))[:8]}"
        raise ModelError(
            f"checkpoint {path.name!r} is {what} without 'architecture' and 'config': segpipe "
            "cannot rebuild the network; re-save it with segpipe.models.save_checkpoint("
            "model, path, architecture=..., config=..., card=...)"
        )
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ModelError(
            f"checkpoint {path.name!r} has version {payload.get('version')!r}; this segpipe "
            f"reads version {CHECKPOINT_VERSION}; upgrade segpipe or re-save the checkpoint"
        )
    if not isinstance(payload.get("config") or {}, Mapping) or not isinstance(
        payload.get("state_dict"), Mapping
    ):
        raise ModelError(
            f"checkpoint {path.name!r} needs a 'config' dict and a 'state_dict'; "
            "re-save it with segpipe.models.save_checkpoint"
        )
    return payload


def _payload_card(payload: Mapping[str, Any], path: Path) -> ModelCard | None:
    if payload.get("card") is None:
        return None
    try:
        return ModelCard.from_dict(payload["card"])
    except ModelError as exc:
        raise ModelError(f"card in {path.name!r}: {exc}") from None


def checkpoint_card(path: Path) -> ModelCard | None:
    """The card of the segpipe checkpoint ``path`` (embedded, else its sidecar), None if none.

    Reads the file with ``torch.load(weights_only=True)`` but builds no network.
    """
    return _payload_card(_checkpoint_payload(path), path) or sidecar_card(path)


def _load_checkpoint(path: Path, device: torch.device) -> ModelParts:
    payload = _checkpoint_payload(path)
    architecture = str(payload["architecture"])
    config = dict(payload.get("config") or {})
    module = create_model(architecture, **config)
    try:
        module.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"checkpoint {path.name!r} weights do not fit architecture {architecture!r} with "
            f"config {config} ({first_line(exc)})"
        ) from None
    module = module.eval().to(device)
    card = _payload_card(payload, path)
    channels = int(resolve_config(architecture, **config)["in_channels"])
    return ModelParts(_eager(module, device), card, channels)


def _load_onnx(path: Path, device: torch.device) -> ModelParts:
    import onnxruntime as ort

    providers: list[Any] = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        else:
            log.warning("onnxruntime has no CUDA provider here; %s runs on the CPU", path.name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # the thread budget torch was given (a Dask worker's share of the cores), not every core
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:
        raise ModelError(f"ONNX file {path.name!r} cannot be loaded ({first_line(exc)})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(
            f"ONNX model {path.name!r} has {len(inputs)} inputs; a segmentation model takes one "
            "N×C×H×W image batch"
        )
    meta = session.get_modelmeta().custom_metadata_map
    card = _parse_card(meta.get(ONNX_CARD_KEY), f"card in {path.name!r}")
    input_name = inputs[0].name
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ModelError(
            f"ONNX model {path.name!r} takes a {len(shape)}-D input {list(shape)}; a "
            "segmentation model takes one N×C×H×W image batch"
        )
    channels = int(shape[1]) if _static(shape[1]) else None
    batch = int(shape[0]) if _static(shape[0]) else None

    def run(x: Tensor) -> Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (out, *_) = session.run(None, {input_name: array})
        return torch.from_numpy(out)

    forward = run if batch is None else _in_batches_of(run, batch)
    return ModelParts(forward, card, channels, _onnx_fixed_size(path, shape))


def _static(dim: object) -> bool:
    """Whether an ONNX input dimension is a number (not a symbolic name or None)."""
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


def _onnx_fixed_size(path: Path, shape: tuple[Any, ...]) -> int | None:
    """The fixed input side of an ONNX graph (static H = W), None when H and W are dynamic."""
    height, width = shape[2], shape[3]
    if not _static(height) and not _static(width):
        return None
    if height != width:
        raise ModelError(
            f"ONNX model {path.name!r} takes inputs of fixed size {height}×{width}; segpipe "
            "runs square tiles: re-export it with H = W or with dynamic H and W"
        )
    return int(height)


def _in_batches_of(run: Forward, batch: int) -> Forward:
    """``run`` for a model whose batch size is fixed: any N, in chunks of ``batch`` tiles."""

    def batched(x: Tensor) -> Tensor:
        outputs = []
        for start in range(0, x.shape[0], batch):
            chunk = x[start : start + batch]
            short = batch - chunk.shape[0]
            if short:  # fill the last chunk with copies of its last tile
                chunk = torch.cat([chunk, chunk[-1:].expand(short, *chunk.shape[1:])])
            outputs.append(run(chunk)[: batch - short])
        return torch.cat(outputs)

    return batched
