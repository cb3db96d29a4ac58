"""Load a segmentation model from a file or a registry name, run it, and keep one per process.

:func:`load_model` reads any format of :mod:`segpipe.models.formats` (an exported program,
TorchScript, a segpipe checkpoint, ONNX, or a registry name) into a :class:`LoadedModel`, the
one object that calls models: tensor batches through ``model(x)``, host tile batches through
:meth:`LoadedModel.predict`. :func:`load_model_cached` keeps the last model loaded in this
process, keyed by its hash and device, so that every Dask worker loads the model once and
checks that it is the model the run was planned with. Writers are in :mod:`segpipe.models.saving`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .card import ModelCard
from .formats import (
    Forward,
    ModelFormat,
    ModelParts,
    detect_format,
    load_builtin,
    load_file,
    sidecar_card,
)
from .foundation import InputError, ModelError, Precision, file_sha256, resolve_device
from .registry import list_models
from .remote import fetch_model, is_url

__all__ = ["LoadedModel", "load_model", "load_model_cached"]


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
        fixed_size: the one input side the model takes (an ONNX graph with static H = W), or
            None when it takes any size its network accepts.
        channels_last: whether inputs are laid out channels-last (NHWC) before the forward
            pass: on the CPU oneDNN's convolutions then skip a layout conversion per layer.
            The arithmetic per pixel is the same for every input size, so tiled labels still
            equal whole-image labels within the README's exactness contract (ties aside; the
            exactness tests run with it).

    """

    def __init__(
        self,
        forward: Forward,
        *,
        card: ModelCard | None,
        sha256: str,
        format: ModelFormat,
        path: Path | None,
        device: torch.device,
        in_channels: int | None,
        fixed_size: int | None = None,
        channels_last: bool = False,
    ) -> None:
        self._forward = forward
        self.channels_last = channels_last
        self.fixed_size = fixed_size
        self.card = card
        self.sha256 = sha256
        self.format = format
        self.path = path
        self.device = device
        self.in_channels = in_channels

    def __call__(self, x: Tensor) -> Tensor:
        """Run the model on a float N×C×H×W batch (any device) under ``torch.inference_mode``."""
        return self._run(x, Precision.FP32)

    def predict(self, batch: np.ndarray, *, precision: Precision = Precision.FP32) -> Tensor:
        """Logits N×K×h×w (float32, on ``device``) for a host batch N×C×H×W of tiles.

        The batch is converted to a contiguous float32 tensor; on CUDA it is pinned and copied
        without blocking. ``precision`` ``bf16`` runs the forward pass under bf16 autocast (on
        the CPU too); the logits are returned as float32 either way.
        """
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        return self.predict_tensor(x, precision=precision)

    def predict_tensor(self, x: Tensor, *, precision: Precision = Precision.FP32) -> Tensor:
        """Logits for a float32 N×C×H×W tensor already on ``device`` (the batch runner's path)."""
        try:
            precision = Precision(precision)
        except ValueError:
            choices = ", ".join(p.value for p in Precision)
            raise InputError(f"precision {precision!r} is not one of {choices}") from None
        return self._run(x, precision)

    def _run(self, x: Tensor, precision: Precision) -> Tensor:
        """Check ``x``, run the forward pass in ``precision``, check and return the logits."""
        self._check_input(x)
        x = x.to(dtype=torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=precision is Precision.BF16
            ),
        ):
            out = self._forward(x)
        if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[0] != x.shape[0]:
            got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ModelError(
                f"model returned {got} for input {list(x.shape)}; a segmentation model must "
                "return N×K×h×w logits"
            )
        return out.to(device=self.device, dtype=torch.float32)

    def _check_input(self, x: object) -> None:
        if not isinstance(x, Tensor) or x.ndim != 4:
            shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ModelError(f"model input {shape} is invalid; pass an N×C×H×W float tensor")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ModelError(
                f"model input has {x.shape[1]} channels but the model expects "
                f"{self.in_channels}; select that many bands (--bands)"
            )

    @property
    def module(self) -> torch.nn.Module | None:
        """The PyTorch module behind the forward pass, when there is one (not for ONNX)."""
        module = getattr(self._forward, "module", None)
        return module if isinstance(module, torch.nn.Module) else None

    def compiled(self) -> LoadedModel:
        """The same model with its module under ``torch.compile`` (compiled at the first call).

        Opt-in (``--backend compile``): the compiled kernels may round differently from eager.
        """
        module = self.module
        if module is None:
            raise ModelError(
                f"--backend compile needs a PyTorch model; {self.format.value} models run as they "
                "are: use --backend eager"
            )
        compiled = torch.compile(module, dynamic=False)
        device = self.device
        one_at_a_time = threading.Lock()  # torch.compile is not thread-safe (host threads)

        def run(x: Tensor) -> Tensor:
            with one_at_a_time:
                return compiled(x.to(device))

        return LoadedModel(
            run, card=self.card, sha256=self.sha256, format=self.format, path=self.path,
            device=self.device, in_channels=self.in_channels, fixed_size=self.fixed_size,
            channels_last=self.channels_last,
        )

    def __repr__(self) -> str:
        """Short description: format, source, device and card name."""
        source = str(self.path) if self.path is not None else "builtin"
        name = self.card.name if self.card is not None else None
        return (
            f"LoadedModel(format={self.format.value!r}, path={source!r}, "
            f"device={str(self.device)!r}, card={name!r}, sha256={self.sha256[:12]!r})"
        )


# --------------------------------------------------------------------------------- loading


def load_model(
    path_or_name: str | os.PathLike[str], device: str = "cpu", *,
    channels_last: bool | None = None,
) -> LoadedModel:
    """Load a model file (exported, TorchScript, checkpoint, ONNX) or build a registry model.

    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available); a bad
    or absent device raises :class:`InputError`. Every problem with the model (missing file,
    unreadable or unknown content, bad card, bare state_dict) raises :class:`ModelError` with a
    one-line message. A sidecar ``<stem>.json`` card is used when the file embeds none.
    ``channels_last`` None: on for PyTorch models on the CPU (see :class:`LoadedModel`).
    """
    dev = resolve_device(device)
    if is_url(path_or_name):  # fetched into the local model cache (models/remote.py)
        path_or_name = fetch_model(os.fspath(path_or_name))
    path = Path(path_or_name)
    if not path.exists():
        text = os.fspath(path_or_name)
        if isinstance(path_or_name, str) and text in list_models():
            parts, sha256 = load_builtin(text, dev)
            return _loaded(parts, sha256, ModelFormat.BUILTIN, None, dev, channels_last)
        if isinstance(path_or_name, str) and os.sep not in text and not path.suffix:
            raise ModelError(
                f"model {text!r} is neither a file nor a known model name; "
                f"known names: {', '.join(list_models())}"
            )
        raise ModelError(f"model file {text!r} does not exist; check the path")
    if not path.is_file():
        raise ModelError(f"model path {str(path)!r} is not a file; pass a model file")
    kind = detect_format(path)
    sha256 = file_sha256(path)
    parts = load_file(path, kind, dev)
    if parts.card is None:
        parts = parts._replace(card=sidecar_card(path))
    card, channels = parts.card, parts.in_channels
    if card is not None and channels is not None and card.bands != channels:
        raise ModelError(
            f"model card says bands={card.bands} but {path.name} expects {channels} input "
            "channels; fix the card's bands"
        )
    return _loaded(parts, sha256, kind, path, dev, channels_last)


def _loaded(
    parts: ModelParts, sha256: str, kind: ModelFormat, path: Path | None, device: torch.device,
    channels_last: bool | None,
) -> LoadedModel:
    if channels_last is None:
        channels_last = device.type == "cpu" and kind is not ModelFormat.ONNX
    return LoadedModel(
        parts.forward,
        card=parts.card,
        sha256=sha256,
        format=kind,
        path=path,
        device=device,
        in_channels=parts.card.bands if parts.card is not None else parts.in_channels,
        fixed_size=parts.fixed_size,
        channels_last=channels_last,
    )


# ----------------------------------------------------------------------------------- cache

_CACHE: dict[tuple[str, str], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def load_model_cached(
    path_or_name: str, device: str, sha256: str | None = None, *, compiled: bool = False
) -> LoadedModel:
    """The model ``path_or_name`` on ``device``, loaded once per process and then reused.

    A URL is fetched into the local model cache first (:func:`.remote.fetch_model`, checked
    against ``sha256``). One model is kept per process at a time, keyed by (hash, device): a file
    by its sha256
    (:func:`file_sha256`, itself cached by path, size and modification time, so a file
    rewritten in place is loaded again), a registry name as ``name:<name>``. ``sha256`` is the
    :attr:`LoadedModel.sha256` the run was planned with; when given and the model here differs,
    :class:`ModelError` names the file and both hashes (the file changed since planning).
    Thread-safe; this is what Dask workers and the driver call. ``compiled``: the model under
    ``torch.compile`` (:meth:`LoadedModel.compiled`), kept as well.
    """
    dev = str(resolve_device(device))
    if is_url(path_or_name):  # the cached copy, verified against the planned hash
        path_or_name = str(fetch_model(path_or_name, sha256))
    path = Path(path_or_name)
    if path.is_file():
        key = file_sha256(path)
        _check_hash(path_or_name, sha256, key, is_file=True)  # before paying for the load
    else:
        key = f"name:{path_or_name}"
    with _CACHE_LOCK:
        model = _CACHE.get((key, dev))
        if model is None:
            _CACHE.clear()  # one model per process: free the previous one first
            model = load_model(path_or_name, device=dev)
            _CACHE[(key, dev)] = model
        if compiled:
            fast = _CACHE.get((key, f"{dev}:compiled"))
            if fast is None:
                fast = _CACHE[(key, f"{dev}:compiled")] = model.compiled()
            model = fast
    _check_hash(path_or_name, sha256, model.sha256, is_file=model.path is not None)
    return model


def _check_hash(source: str, expected: str | None, actual: str, *, is_file: bool) -> None:
    if expected is None or expected == actual:
        return
    change = f"sha256 {expected[:12]}… → {actual[:12]}…"
    if is_file:
        raise ModelError(f"model file {source} changed since the run was planned ({change}); rerun")
    raise ModelError(
        f"model {source!r} built here differs from the one the run was planned with ({change}); "
        "use the same segpipe and torch versions everywhere and rerun"
    )
