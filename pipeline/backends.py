"""``--backend``: how the model's forward pass runs on the workers.

- ``eager`` (default): PyTorch as the model was written, channels-last on the CPU; tiled labels
  equal whole-image labels, ties aside (the README's exactness contract).
- ``compile``: the module under ``torch.compile`` on each worker (compiled at its first batch).
- ``onnxruntime``: the model exported to ONNX once per run, in the work directory, and run by
  ONNX Runtime on every worker (segpipe's ONNX loader).

The last two are opt-in: their kernels may round differently from eager, so a few labels can
differ where two classes are near a tie; BENCHMARKS.md records their agreement with float32
eager and their speed. The backend is part of the label key (``--resume`` will not mix them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segpipe.models.foundation import ModelError, file_sha256
from segpipe.pipeline.options import Backend

if TYPE_CHECKING:
    from segpipe.pipeline.plan import RunPlan

__all__ = ["ONNX_NAME", "block_model", "prepare_backend"]

ONNX_NAME = "model.onnx"


def _onnx_path(plan: RunPlan) -> Path:
    return Path(plan.workdir.path) / ONNX_NAME


def prepare_backend(plan: RunPlan) -> None:
    """Export the model for ``onnxruntime`` into the work directory (once per run)."""
    if plan.options.inference.backend is not Backend.ONNXRUNTIME:
        return
    path = _onnx_path(plan)
    if path.exists():
        return
    from segpipe.models.loading import load_model_cached
    from segpipe.models.saving import export_onnx

    model = load_model_cached(plan.model, "cpu", plan.model_sha256)
    if model.module is None:
        raise ModelError(
            f"--backend onnxruntime exports PyTorch models; {plan.model} is "
            f"{model.format.value}: use --backend eager"
        )
    size = plan.geometry.fit(plan.tiles.input_size)
    export_onnx(model.module, path, card=plan.card, example_size=size,
                in_channels=len(plan.bands))


def block_model(plan: RunPlan) -> tuple[str, str]:
    """The model file (and its sha256) the blocks load: the ONNX export or the model itself."""
    if plan.options.inference.backend is Backend.ONNXRUNTIME:
        path = _onnx_path(plan)
        return str(path), file_sha256(path)
    return plan.model, plan.model_sha256
