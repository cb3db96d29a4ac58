"""Segmenting one block: read with halo, normalize, run the model per tile, stitch, write.

A :class:`SegmentJob` holds everything a worker needs as small picklable values (paths, the
plan, the normalizer); tasks carry the job and a block index, never arrays or models. Each
worker loads the model once per (file hash, device) and reuses it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from segpipe.models import LoadedModel, load_model
from segpipe.pipeline.infer import Runner, label_dtype, nodata_label, resolve_device
from segpipe.pipeline.io.base import open_raster
from segpipe.pipeline.io.zarrstore import open_array
from segpipe.pipeline.normalize import Normalizer
from segpipe.pipeline.stitch import Blend, Merger
from segpipe.pipeline.tiling import Block, TilePlan, read_mirrored


@dataclass(frozen=True)
class SegmentJob:
    """What every block task of one run shares."""

    image_path: str
    labels_path: str
    model: str
    model_sha256: str
    plan: TilePlan
    margin: int
    num_classes: int
    bands: tuple[int, ...]
    normalizer: Normalizer
    nodata: float | None
    blend: Blend = Blend.CROP
    batch_size: int = 4
    device: str = "auto"
    bf16: bool = False
    probabilities_path: str | None = None


@dataclass(frozen=True)
class BlockResult:
    """What a finished block reports back (small)."""

    block_id: str
    pixels: int
    nodata_pixels: int
    seconds: float


_MODELS: dict[tuple[str, str], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def cached_model(path: str, sha256: str, device: str) -> LoadedModel:
    """The model at ``path`` on ``device``, loaded once per process and kept (keyed by hash)."""
    key = (sha256, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS.clear()  # one model per worker process at a time
            _MODELS[key] = load_model(path, device=device)
        return _MODELS[key]


def keep_model(model: LoadedModel, device: str) -> None:
    """Put an already loaded model into this process's cache (the driver's own copy)."""
    with _MODELS_LOCK:
        _MODELS.clear()
        _MODELS[(model.sha256, device)] = model


def segment_block(job: SegmentJob, index: tuple[int, int]) -> BlockResult:
    """Segment block ``index`` of ``job.plan`` and write its core to the label array."""
    start = time.perf_counter()
    plan = job.plan
    block = plan.block_at(*index)
    device = resolve_device(job.device)
    model = cached_model(job.model, job.model_sha256, str(device))
    with open_raster(job.image_path) as reader:
        bands = list(job.bands)
        pixels = read_mirrored(
            lambda w: reader.read(w)[bands], block.read, plan.height, plan.width
        )
    x, nodata_mask = job.normalizer.apply(pixels, job.nodata)
    stitched = _run_tiles(job, block, x, model, device)
    core = block.core.relative_to(block.read).slices
    labels = stitched.labels.astype(label_dtype(job.num_classes))
    missing = nodata_mask[core]
    labels[missing] = nodata_label(job.num_classes)
    rows, cols = block.core.slices
    open_array(job.labels_path)[rows, cols] = labels
    if job.probabilities_path is not None and stitched.probabilities is not None:
        probs = stitched.probabilities
        probs[:, missing] = 0
        open_array(job.probabilities_path)[:, rows, cols] = probs.astype(np.float16)
    return BlockResult(
        block.id, labels.size, int(missing.sum()), time.perf_counter() - start
    )


def _run_tiles(job: SegmentJob, block: Block, x: np.ndarray, model, device):
    runner = Runner(model, device, bf16=job.bf16)
    merger = Merger(
        block.core, blend=job.blend, margin=job.margin,
        probabilities=job.probabilities_path is not None,
    )
    tiles = list(block.tiles)
    for i in range(0, len(tiles), job.batch_size):
        batch = tiles[i : i + job.batch_size]
        inputs = np.stack([x[(slice(None), *t.read.relative_to(block.read).slices)] for t in batch])
        logits = runner(inputs)
        for t, out in zip(batch, logits):
            merger.add(t, out)
    return merger.finalize()
