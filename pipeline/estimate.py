"""How long ``segpipe run`` would take and how much memory it would need, from one tile.

The forward pass is measured on this machine: one tile of the input, read as the run reads it
(core, halo, mirror padding, the model's input size), goes through the model to warm up and is
then timed (the median of a few passes when one is short); when a whole batch of copies of it
is quick (a GPU), the batch is timed too, since batching is faster there. The rest is counted
from the tile plan or taken from the constants below:

- **time** = seconds per tile × the tiles the run computes (a Gaussian blend's ring tiles
  included; a batch of B tiles costs B single tiles unless the batch was timed) + the plan
  (loading and probing the model: measured, the run does the same) + pixels ×
  :data:`IO_SECONDS_PER_MEGAPIXEL` (ingest, statistics, export) + :data:`STARTUP_SECONDS`
  (the ``segpipe`` process, Prefect's temporary server, the flow);
- **peak memory** = this process as it stands (Python, torch, the readers, the model: its
  resident size, measured) + the forward pass of a batch (on the CPU the tile's peak resident
  growth × B, as tensors and activations grow linearly with the batch; with CUDA the
  libraries' first use and the inputs' host copies, the GPU's own peak being reported apart)
  + one block's buffers (counted: the read window raw and as float32, the nodata mask, the
  merger's arrays, the labels) + :data:`ORCHESTRATION_BYTES` (Prefect and Dask in the run's
  process).

Both are for one process segmenting, as ``segpipe run --workers 0`` does; with N local
workers each worker holds the process, model, forward-pass and block parts. The constants were
measured on a shared 2-core machine; ``benchmarks/inspect_estimate.py`` compares the estimate
with a real run and records the ratios in ``benchmarks/results/inspect_estimate.json``.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from segpipe.models.foundation import Precision
from segpipe.models.loading import LoadedModel
from segpipe.pipeline.labels import label_dtype, labels_from_logits
from segpipe.pipeline.options import Blend
from segpipe.pipeline.tiling import TilePlan

__all__ = [
    "IO_SECONDS_PER_MEGAPIXEL",
    "ORCHESTRATION_BYTES",
    "STARTUP_SECONDS",
    "BlockBuffers",
    "Estimate",
    "ForwardTiming",
    "batch_size_for",
    "computed_tiles",
    "estimate",
    "resident_bytes",
    "time_forward",
]

#: Ingest, statistics and export per megapixel of the level read (about 0.03 s measured for a
#: 3-band uint8 GeoTIFF on 2 cores; rounded up for quicklooks and larger band counts).
IO_SECONDS_PER_MEGAPIXEL = 0.05
#: Starting ``segpipe run``: imports, Prefect's temporary server, the flow and its tasks
#: (wall time less the stages: 7 s measured on an idle 2-core machine, BENCHMARKS.md; two to
#: five times that when other work shares the cores).
STARTUP_SECONDS = 10.0
#: What Prefect and Dask add to the resident size of the run's process.
ORCHESTRATION_BYTES = 200 << 20
#: Warm-up passes (at least one) and timed passes (at least one, the median is taken): more
#: while they add up to less than these many seconds, so a fast GPU reaches its clocks.
WARMUP_SECONDS = 0.2
MIN_TIMED_SECONDS = 0.5
MAX_PASSES = 20
#: When a whole batch of copies of the tile would take less than this, it is timed too (on a
#: GPU a batch of B tiles takes less than B single tiles).
QUICK_BATCH_SECONDS = 1.0


@dataclass(frozen=True)
class ForwardTiming:
    """The model on the tile: seconds per tile, and the memory of one batch of the run.

    ``timed_batch`` is 1 when one tile was timed and the batch of ``batch`` tiles is taken to
    cost ``batch`` tiles, or ``batch`` when the whole batch was timed. ``host_bytes`` is what a
    batch's pass takes in the process beyond what it held before (on the CPU its tensors and
    activations; with CUDA the libraries' first use and the host copies of the inputs);
    ``device_bytes`` the peak allocation on the GPU beyond the model (None on the CPU).
    """

    batch: int
    timed_batch: int
    tile_seconds: float
    passes: int
    host_bytes: int
    device_bytes: int | None = None


@dataclass(frozen=True)
class _Passes:
    seconds: float
    passes: int
    host_bytes: int
    device_bytes: int | None


@dataclass(frozen=True)
class BlockBuffers:
    """What the block that is being segmented holds besides the batch (counted, in bytes)."""

    read: int
    merger: int

    @classmethod
    def of(
        cls, tiles: TilePlan, *, bands: int, bands_read: int, itemsize: int, classes: int,
        blend: Blend, probabilities: bool,
    ) -> BlockBuffers:
        """The buffers of the plan's first block (a full one: blocks are cut from the top left).

        ``bands_read`` bands are read, ``bands`` of them kept and normalized to float32 with a
        nodata mask; the merger holds its weights, int64 labels (crop) or float32 logit sums
        (Gaussian), float32 probabilities when asked, and the labels as written.
        """
        block = tiles.block_at(0, 0)
        read = block.read.size * (bands_read * itemsize + bands * itemsize + bands * 4 + 1)
        core = block.core.size
        merger = core * (4 + int(label_dtype(classes).itemsize))
        merger += core * (8 if Blend(blend) is Blend.CROP else 2 * 4 * classes)
        if probabilities:
            merger += core * classes * (4 + 2)
        return cls(read, merger)

    @property
    def total(self) -> int:
        """Bytes of all buffers."""
        return self.read + self.merger


@dataclass(frozen=True)
class Estimate:
    """Run time and peak memory of ``segpipe run --workers 0`` on this machine."""

    device: str
    timing: ForwardTiming
    tiles: int
    megapixels: float
    plan_seconds: float
    process_bytes: int
    model_bytes: int
    block: BlockBuffers

    @property
    def model_seconds(self) -> float:
        """Forward passes of every tile the run computes (batches take ``batch`` × a tile)."""
        return self.timing.tile_seconds * self.tiles

    @property
    def io_seconds(self) -> float:
        """Ingest, statistics and export."""
        return self.megapixels * IO_SECONDS_PER_MEGAPIXEL

    @property
    def seconds(self) -> float:
        """The whole run."""
        return self.model_seconds + self.plan_seconds + self.io_seconds + STARTUP_SECONDS

    @property
    def peak_bytes(self) -> int:
        """Peak resident memory of the run's process."""
        return (self.process_bytes + self.timing.host_bytes + self.block.total
                + ORCHESTRATION_BYTES)

    def to_dict(self) -> dict[str, Any]:
        """The ``estimate`` object of ``segpipe inspect --json``."""
        t = self.timing
        return {
            "device": self.device,
            "seconds": round(self.seconds, 3),
            "peak_memory_bytes": self.peak_bytes,
            "device_memory_bytes": t.device_bytes,
            "tile_seconds": round(t.tile_seconds, 4),
            "batch_size": t.batch,
            "timed_batch": t.timed_batch,
            "timed_passes": t.passes,
            "tiles": self.tiles,
            "time": {
                "model_seconds": round(self.model_seconds, 3),
                "plan_seconds": round(self.plan_seconds, 3),
                "io_seconds": round(self.io_seconds, 3),
                "startup_seconds": STARTUP_SECONDS,
            },
            "memory": {
                "process_bytes": self.process_bytes,
                "model_bytes": self.model_bytes,
                "forward_bytes": t.host_bytes,
                "block_bytes": self.block.total,
                "orchestration_bytes": ORCHESTRATION_BYTES,
            },
        }


def computed_tiles(tiles: TilePlan) -> list[int]:
    """How many tiles each block computes (its own and, for Gaussian blending, its ring)."""
    rows, cols = tiles.grid

    def span(b: int, n: int) -> int:
        lo, hi = b * tiles.block, min((b + 1) * tiles.block, n)
        return min(hi + tiles.ring, n) - max(lo - tiles.ring, 0)

    return [span(bi, rows) * span(bj, cols) for bi, bj in tiles.block_indices()]


def estimate(
    timing: ForwardTiming, tiles: TilePlan, *, plan_seconds: float, process_bytes: int,
    model_bytes: int, block: BlockBuffers, device: str,
) -> Estimate:
    """The estimate from a measured tile and the plan."""
    return Estimate(
        device=device, timing=timing, tiles=sum(computed_tiles(tiles)),
        megapixels=tiles.height * tiles.width / 1e6, plan_seconds=plan_seconds,
        process_bytes=process_bytes, model_bytes=model_bytes, block=block,
    )


def time_forward(
    model: LoadedModel, tile: np.ndarray, precision: Precision, batch: int
) -> ForwardTiming:
    """Time one tile (C × S × S) through the model, and the run's batch of ``batch`` tiles.

    The tile is timed alone; a batch of ``batch`` copies of it is timed too when that takes
    less than :data:`QUICK_BATCH_SECONDS` (a GPU), else its time and memory are the tile's ×
    ``batch`` (tensors and activations grow linearly with the batch).
    """
    one = _passes(model, tile[None], precision)
    whole = None
    if batch > 1 and one.seconds * batch < QUICK_BATCH_SECONDS:
        whole = _passes(model, np.repeat(tile[None], batch, axis=0), precision)
    if model.device.type == "cuda":  # activations live on the GPU; the host holds the inputs
        host = one.host_bytes + (batch - 1) * 2 * tile.nbytes
        device = whole.device_bytes if whole else (one.device_bytes or 0) * batch
    else:
        host, device = one.host_bytes * batch, None
    if whole is not None:
        return ForwardTiming(batch, batch, whole.seconds / batch, whole.passes, host, device)
    return ForwardTiming(batch, 1, one.seconds, one.passes, host, device)


def _passes(model: LoadedModel, x: np.ndarray, precision: Precision) -> _Passes:
    """Warm up, then time passes of ``x``; the memory they took (peak over all of them)."""
    cuda = model.device.type == "cuda"
    device_before = 0
    if cuda:
        torch.cuda.reset_peak_memory_stats(model.device)
        device_before = torch.cuda.memory_allocated(model.device)
    before = resident_bytes()
    _reset_peak()
    _repeat(model, x, precision, WARMUP_SECONDS)
    times = _repeat(model, x, precision, MIN_TIMED_SECONDS)
    host = max(0, _peak_resident_bytes() - before) + x.nbytes
    device = None
    if cuda:
        device = torch.cuda.max_memory_allocated(model.device) - device_before
    return _Passes(statistics.median(times), len(times), host, device)


def _repeat(model: LoadedModel, x: np.ndarray, precision: Precision, seconds: float) -> list[float]:
    """Passes of ``x``: one, then more while they add up to less than ``seconds``."""
    times: list[float] = []
    while not times or (len(times) < MAX_PASSES and sum(times) < seconds):
        start = time.perf_counter()
        _forward(model, x, precision)
        times.append(time.perf_counter() - start)
    return times


def _forward(model: LoadedModel, batch: np.ndarray, precision: Precision) -> None:
    """What a block does with a batch: logits, then labels on the host (syncs a GPU)."""
    labels_from_logits(model.predict(batch, precision=precision)).cpu()


def resident_bytes() -> int:
    """The resident memory of this process now."""
    return int(psutil.Process().memory_info().rss)


def _reset_peak() -> None:
    """Start the peak-resident count afresh (Linux: ``/proc/self/clear_refs``), if possible."""
    # elsewhere the peak since the process started is used (an upper bound)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_resident_bytes() -> int:
    """Peak resident memory since :func:`_reset_peak` (or since the process started)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def batch_size_for(tiles: TilePlan, batch_size: int) -> int:
    """The largest batch the run forms: ``--batch-size``, or fewer when a block has fewer."""
    return max(1, min(batch_size, max(computed_tiles(tiles))))

