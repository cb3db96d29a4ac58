"""Load a segmentation model from a file or a registry name, and write model files.

Formats, recognised by content (zip members) and extension:

- exported program (``torch.export``, ``.pt2``): the card is the ``card.json`` extra file;
- TorchScript (``.pt``/``.ts``; deprecated since torch 2.14 but common): ``card.json`` extra file;
- segpipe checkpoint (``.pt``/``.pth``/``.ckpt``): a dict ``{"format": "segpipe-checkpoint",
  "version": 1, "architecture", "config", "state_dict", "card"}``, read only with
  ``torch.load(..., weights_only=True)`` and rebuilt with :func:`create_model`;
- ONNX (``.onnx``) through onnxruntime: the card is the ``segpipe_card`` metadata property;
- a registry name such as ``"unet"``: a fresh network with random weights seeded by
  ``torch.manual_seed(0)`` and the default card. For demos and tests only: it segments nothing.

A sidecar ``<stem>.json`` card next to a model file is used when the file has no card of its own;
an embedded card wins. Exported programs and TorchScript files contain pickled data: load them
only from sources you trust (checkpoints are safe: ``weights_only=True``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from .card import ModelCard
from .errors import InputError, ModelError
from .registry import create_model, default_card, list_models, resolve_config

__all__ = [
    "LoadedModel",
    "ModelFormat",
    "export_onnx",
    "export_program",
    "export_torchscript",
    "load_model",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "segpipe-checkpoint"
CHECKPOINT_VERSION = 1
CARD_FILE = "card.json"
ONNX_CARD_KEY = "segpipe_card"
_CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".bin"})
_PICKLE_PROTOCOL_2 = b"\x80\x02"


class ModelFormat(StrEnum):
    """How a model is stored."""

    EXPORTED = "exported"
    TORCHSCRIPT = "torchscript"
    CHECKPOINT = "checkpoint"
    ONNX = "onnx"
    BUILTIN = "builtin"


Runner = Callable[[Tensor], Tensor]


class LoadedModel:
    """A model ready to run: float32 N×C×H×W in, float32 N×K×h×w logits out on ``device``.

    Attributes:
        card: the model card, or None when the model has none (raw pixels as float32).
        sha256: hex digest of the model file (for a registry name: of its weights).
        format: how the model was stored.
        path: the file it came from (None for a registry name).
        device: where the model runs and where its outputs are returned.
        in_channels: input bands the model expects (card ``bands``, else inspected; None when
            unknown).

    """

    def __init__(
        self,
        runner: Runner,
        *,
        card: ModelCard | None,
        sha256: str,
        format: ModelFormat,
        path: Path | None,
        device: torch.device,
        in_channels: int | None,
    ) -> None:
        self._runner = runner
        self.card = card
        self.sha256 = sha256
        self.format = format
        self.path = path
        self.device = device
        self.in_channels = in_channels

    def __call__(self, x: Tensor) -> Tensor:
        """Run the model on a float N×C×H×W batch (any device) under ``torch.inference_mode``."""
        if not isinstance(x, Tensor) or x.ndim != 4:
            shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ModelError(f"model input {shape} is invalid; pass an N×C×H×W float tensor")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ModelError(
                f"model input has {x.shape[1]} channels but the model expects "
                f"{self.in_channels}; select that many bands (--bands)"
            )
        with torch.inference_mode():
            out = self._runner(x.to(dtype=torch.float32))
        if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[0] != x.shape[0]:
            got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ModelError(
                f"model returned {got} for input {list(x.shape)}; a segmentation model must "
                "return N×K×h×w logits"
            )
        return out.to(device=self.device, dtype=torch.float32)

    def __repr__(self) -> str:
        """Short description: format, source, device and card name."""
        source = str(self.path) if self.path is not None else "builtin"
        name = self.card.name if self.card is not None else None
        return (
            f"LoadedModel(format={self.format.value!r}, path={source!r}, "
            f"device={str(self.device)!r}, card={name!r}, sha256={self.sha256[:12]!r})"
        )


# --------------------------------------------------------------------------------- loading


def load_model(path_or_name: str | os.PathLike[str], device: str = "cpu") -> LoadedModel:
    """Load a model file (exported, TorchScript, checkpoint, ONNX) or build a registry model.

    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available).
    Every problem (missing file, unreadable or unknown content, bad card, bare state_dict,
    unavailable device) raises :class:`ModelError` with a one-line message.
    """
    dev = resolve_device(device)
    path = Path(path_or_name)
    if not path.exists():
        text = os.fspath(path_or_name)
        if isinstance(path_or_name, str) and text in list_models():
            return _load_builtin(text, dev)
        if isinstance(path_or_name, str) and os.sep not in text and not path.suffix:
            raise ModelError(
                f"model {text!r} is neither a file nor a known model name; "
                f"known names: {', '.join(list_models())}"
            )
        raise ModelError(f"model file {text!r} does not exist; check the path")
    if not path.is_file():
        raise ModelError(f"model path {str(path)!r} is not a file; pass a model file")
    kind = _detect_format(path)
    sha256 = file_sha256(path)
    if kind is ModelFormat.EXPORTED:
        runner, card, channels = _load_exported(path, dev)
    elif kind is ModelFormat.TORCHSCRIPT:
        runner, card, channels = _load_torchscript(path, dev)
    elif kind is ModelFormat.CHECKPOINT:
        runner, card, channels = _load_checkpoint(path, dev)
    else:
        runner, card, channels = _load_onnx(path, dev)
    if card is None:
        card = _sidecar_card(path)
    if card is not None and channels is not None and card.bands != channels:
        raise ModelError(
            f"model card says bands={card.bands} but {path.name} expects {channels} input "
            "channels; fix the card's bands"
        )
    return LoadedModel(
        runner,
        card=card,
        sha256=sha256,
        format=kind,
        path=path,
        device=dev,
        in_channels=card.bands if card is not None else channels,
    )


def resolve_device(device: str) -> torch.device:
    """``auto`` → the first CUDA device when there is one, else the CPU; ``cuda[:N]`` checked."""
    device = device.strip().lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(
            f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device} asked for CUDA but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type != "cpu":
        raise InputError(f"--device {device!r} is not supported: use auto, cpu, cuda or cuda:N")
    return dev


def _detect_format(path: Path) -> ModelFormat:
    suffix = path.suffix.lower()
    if zipfile.is_zipfile(path):
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


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a whole file, read in 1 MiB pieces (the identity of a model file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_dict_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """Digest of names, dtypes, shapes and raw bytes of every tensor, in order."""
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _parse_card(text: str | bytes | None, where: str) -> ModelCard | None:
    if text is None or not text:
        return None
    try:
        return ModelCard.from_json(text)
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from None


def _sidecar_card(path: Path) -> ModelCard | None:
    sidecar = path.with_suffix(".json")
    if sidecar == path or not sidecar.is_file():
        return None
    try:
        text = sidecar.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"sidecar card {sidecar.name!r} cannot be read ({exc})") from None
    return _parse_card(text, f"sidecar card {sidecar.name!r}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _conv_in_channels(module: nn.Module) -> int | None:
    """In-channels of the first 4-D weight (the first convolution), or None."""
    for param in module.parameters():
        return int(param.shape[1]) if param.ndim == 4 else None
    return None


def _eager_runner(module: Callable[[Tensor], Tensor], device: torch.device) -> Runner:
    def run(x: Tensor) -> Tensor:
        return module(x.to(device))

    return run


def _load_builtin(name: str, device: torch.device) -> LoadedModel:
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's RNG state
        torch.manual_seed(0)
        module = create_model(name).eval().to(device)
    card = default_card(name)
    return LoadedModel(
        _eager_runner(module, device),
        card=card,
        sha256=_state_dict_sha256(module.state_dict()),
        format=ModelFormat.BUILTIN,
        path=None,
        device=device,
        in_channels=card.bands,
    )


def _load_exported(path: Path, device: torch.device) -> tuple[Runner, ModelCard | None, int | None]:
    extra: dict[str, Any] = {CARD_FILE: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
        if device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        module = program.module()
    except Exception as exc:
        raise ModelError(
            f"exported program {path.name!r} cannot be loaded ({_first_line(exc)}); re-export "
            "it with this torch version (segpipe.models.export_program)"
        ) from None
    card = _parse_card(extra.get(CARD_FILE), f"card in {path.name!r}")
    shape = _program_input_shape(program)
    channels = int(shape[1]) if len(shape) == 4 and is_concrete_int(shape[1]) else None
    return _eager_runner(module, device), card, channels


def _program_input_shape(program: torch.export.ExportedProgram) -> tuple[Any, ...]:
    """Shape of the exported program's first user input (ints or symbolic sizes)."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            return tuple(getattr(node.meta.get("val"), "shape", ()))
    return ()


@contextlib.contextmanager
def _torchscript_deprecation() -> Iterator[None]:
    """Silence torch's per-call TorchScript FutureWarnings; log one warning instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    if any("deprecated" in str(w.message) for w in caught):
        log.warning(
            "TorchScript is deprecated since torch 2.14; prefer an exported program (.pt2) "
            "written by segpipe.models.export_program"
        )


def _load_torchscript(
    path: Path, device: torch.device
) -> tuple[Runner, ModelCard | None, int | None]:
    extra: dict[str, Any] = {CARD_FILE: ""}
    try:
        with _torchscript_deprecation():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:
        raise ModelError(
            f"TorchScript file {path.name!r} cannot be loaded ({_first_line(exc)})"
        ) from None
    module.eval()
    raw = extra.get(CARD_FILE)
    card = _parse_card(
        raw.decode("utf-8") if isinstance(raw, bytes) else raw, f"card in {path.name!r}"
    )
    return _eager_runner(module, device), card, _conv_in_channels(module)


def _load_checkpoint(
    path: Path, device: torch.device
) -> tuple[Runner, ModelCard | None, int | None]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"checkpoint {path.name!r} cannot be loaded safely with weights_only=True "
            f"({_first_line(exc)}); re-save it with segpipe.models.save_checkpoint"
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
    architecture = payload["architecture"]
    config = payload.get("config") or {}
    state_dict = payload.get("state_dict")
    if not isinstance(config, Mapping) or not isinstance(state_dict, Mapping):
        raise ModelError(
            f"checkpoint {path.name!r} needs a 'config' dict and a 'state_dict'; "
            "re-save it with segpipe.models.save_checkpoint"
        )
    module = create_model(str(architecture), **dict(config))
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"checkpoint {path.name!r} weights do not fit architecture {architecture!r} with "
            f"config {dict(config)} ({_first_line(exc)})"
        ) from None
    module = module.eval().to(device)
    card_data = payload.get("card")
    card = None
    if card_data is not None:
        try:
            card = ModelCard.from_dict(card_data)
        except ModelError as exc:
            raise ModelError(f"card in {path.name!r}: {exc}") from None
    channels = resolve_config(str(architecture), **dict(config))["in_channels"]
    return _eager_runner(module, device), card, int(channels)


def _load_onnx(path: Path, device: torch.device) -> tuple[Runner, ModelCard | None, int | None]:
    import onnxruntime as ort

    providers: list[Any] = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        else:
            log.warning("onnxruntime has no CUDA provider here; %s runs on the CPU", path.name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:
        raise ModelError(f"ONNX file {path.name!r} cannot be loaded ({_first_line(exc)})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(
            f"ONNX model {path.name!r} has {len(inputs)} inputs; a segmentation model takes one "
            "N×C×H×W image batch"
        )
    meta = session.get_modelmeta().custom_metadata_map
    card = _parse_card(meta.get(ONNX_CARD_KEY), f"card in {path.name!r}")
    input_name = inputs[0].name
    shape = inputs[0].shape
    channels = int(shape[1]) if len(shape) == 4 and is_concrete_int(shape[1]) else None

    def run(x: Tensor) -> Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (out, *_) = session.run(None, {input_name: array})
        return torch.from_numpy(out)

    return run, card, channels


# --------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a path with the final name in a hidden folder beside ``path``; move on success.

    Writers may add files next to the one asked for (ONNX external weights); all of them are
    moved. On failure nothing is left at ``path``.
    """
    final = Path(path)
    if not final.parent.is_dir():
        raise ModelError(f"folder {str(final.parent)!r} does not exist; create it first")
    with tempfile.TemporaryDirectory(prefix=f".{final.name}.", dir=final.parent) as folder:
        tmp = Path(folder) / final.name
        yield tmp
        if not tmp.is_file():  # pragma: no cover - every writer writes the file
            raise ModelError(f"writing {final.name!r} produced no file")
        for produced in Path(folder).iterdir():
            os.replace(produced, final.parent / produced.name)


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
    with _atomic_path(path) as tmp:
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
        raise ModelError(f"torch.export failed for this model ({_first_line(exc)})") from exc
    shape = _program_input_shape(program)
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
    with _atomic_path(path) as tmp:
        torch.export.save(program, tmp, extra_files=extra)


def export_torchscript(
    model: nn.Module, path: str | os.PathLike[str], *, card: ModelCard | None
) -> None:
    """Write ``model`` as TorchScript by scripting (never tracing: sizes stay dynamic).

    TorchScript is deprecated since torch 2.14; prefer :func:`export_program`. Kept for users
    and tools that still need it.
    """
    extra = {} if card is None else {CARD_FILE: card.to_json()}
    with _torchscript_deprecation():
        try:
            with _eval_mode(model):
                is_scripted = isinstance(model, torch.jit.ScriptModule)
                scripted = model if is_scripted else torch.jit.script(model)
        except Exception as exc:
            raise ModelError(
                f"torch.jit.script failed for this model ({_first_line(exc)})"
            ) from exc
        with _atomic_path(path) as tmp:
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
    are named ``input`` and ``logits``.
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
        raise ModelError(f"ONNX export failed for this model ({_first_line(exc)})") from exc
    if onnx_program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ModelError("ONNX export returned nothing")
    if card is not None:
        onnx_program.model.metadata_props[ONNX_CARD_KEY] = card.to_json()
    with _atomic_path(path) as tmp:
        onnx_program.save(tmp)
