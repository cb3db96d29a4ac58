"""A block's tiles through the model in batches: a prefetch thread, reused buffers, OOM back-off.

:class:`Prefetcher` cuts the next batch of tiles out of the block's normalized pixels on a
background thread (a bounded queue, two batches ahead) while the current batch runs, into host
buffers that are reused from batch to batch: pinned (page-locked) memory when the model is on a
CUDA device, so the copy to the device is asynchronous on a side stream (:class:`DeviceFeeder`);
plain memory on the CPU, where the same code runs and the copy is a no-op.

:class:`BatchRunner` runs batches through :meth:`LoadedModel.predict`; on
``torch.OutOfMemoryError`` it halves its batch size (for the rest of the process: the next block
starts at the size that fitted), splits the batch and retries, down to one tile.
:func:`fit_batch_size` chooses the batch size on a GPU from its free memory.

None of this changes a label: each tile is the same array and the model sees the same values,
batched or not (the exactness tests run through here).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from segpipe.models.foundation import ModelError, Precision
from segpipe.models.loading import LoadedModel
from segpipe.pipeline.boundedcache import BoundedCache
from segpipe.pipeline.hostthreads import host_threads
from segpipe.pipeline.tiling import Tile, Window

__all__ = [
    "BatchRunner",
    "DeviceFeeder",
    "Prefetcher",
    "fit_batch_size",
    "runner_for",
]

#: Batches prepared ahead of the one that runs.
PREFETCH_DEPTH = 2
#: The most tiles per batch that :func:`fit_batch_size` chooses on a GPU.
MAX_GPU_BATCH = 64
#: Share of the free GPU memory a batch may take (the rest: allocator slack, other tensors).
GPU_MEMORY_SHARE = 0.6
#: Free host buffers kept per tile shape for later blocks (enough for a few host threads).
POOL_KEEP = 12

_DONE = object()


@dataclass(frozen=True)
class Batch:
    """Tiles and their inputs: ``inputs[:len(tiles)]`` holds them (N×C×S×S float32, host)."""

    tiles: tuple[Tile, ...]
    inputs: torch.Tensor

    @property
    def values(self) -> torch.Tensor:
        """The filled part of the buffer."""
        return self.inputs[: len(self.tiles)]


class _BufferPool:
    """Host buffers of one tile shape, shared by every block of the process and reused.

    Allocating page-locked memory costs far more than filling it, and a GPU worker runs many
    blocks (several at once with host threads), so buffers outlive their block: a block takes
    buffers of at least the rows it needs and gives them back when it is done. At most
    :data:`POOL_KEEP` free buffers are kept per shape.
    """

    def __init__(self) -> None:
        self._free: dict[tuple[tuple[int, ...], bool], list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    def take(self, rows: int, tile: tuple[int, ...], pinned: bool) -> torch.Tensor:
        """A buffer of at least ``rows`` tiles of shape ``tile``: a free one, else a new one."""
        with self._lock:
            free = self._free.get((tile, pinned), [])
            fits = [i for i, b in enumerate(free) if b.shape[0] >= rows]
            if fits:  # the smallest that fits (``free`` is largest first)
                return free.pop(fits[-1])
        return torch.empty((rows, *tile), dtype=torch.float32, pin_memory=pinned)

    def give(self, buf: torch.Tensor, pinned: bool) -> None:
        """Keep ``buf`` for later blocks (the smallest are dropped past :data:`POOL_KEEP`)."""
        with self._lock:
            free = self._free.setdefault((tuple(buf.shape[1:]), pinned), [])
            free.append(buf)
            free.sort(key=lambda b: -b.shape[0])
            del free[POOL_KEEP:]


#: The process's host buffers (see :class:`_BufferPool`).
BUFFERS = _BufferPool()


class Prefetcher:
    """Yields the batches of ``tiles`` cut from ``x`` (the block's pixels from ``origin``).

    A background thread fills buffers at most :data:`PREFETCH_DEPTH` batches ahead; the consumer
    gives each buffer back (:meth:`release`) once the device no longer needs it. Buffers hold
    ``min(batch_size, len(tiles))`` tiles and come from the process's pool (:data:`BUFFERS`), so
    later blocks reuse them. An error in the thread is raised in the consumer. Use as a context
    manager.
    """

    def __init__(
        self, x: np.ndarray, origin: Window, tiles: Sequence[Tile], batch_size: int, *,
        pinned: bool = False,
    ) -> None:
        if not tiles:
            raise ValueError("no tiles to batch")
        self.x = x
        self.origin = origin
        self.tiles = tuple(tiles)
        self.batch_size = max(1, min(batch_size, len(self.tiles)))
        size = self.tiles[0].read
        self.tile_shape = (x.shape[0], size.height, size.width)
        self.pinned = pinned
        self._slots = threading.Semaphore(PREFETCH_DEPTH + 1)
        self._held: list[torch.Tensor] = []  # taken from the pool, given back on close
        self._idle: queue.SimpleQueue[torch.Tensor] = queue.SimpleQueue()  # released ones
        self.ready: queue.Queue[object] = queue.Queue(maxsize=PREFETCH_DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="segpipe-prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            for i in range(0, len(self.tiles), self.batch_size):
                group = self.tiles[i : i + self.batch_size]
                buf = self._take()
                if buf is None:
                    return
                view = buf.numpy()
                for k, t in enumerate(group):
                    rows, cols = t.read.relative_to(self.origin).slices
                    view[k] = self.x[:, rows, cols]
                if not self._put(Batch(group, buf)):
                    return
        except BaseException as exc:  # handed to the consumer
            self._put(exc)
            return
        self._put(_DONE)

    def _take(self) -> torch.Tensor | None:
        """A buffer once fewer than ``PREFETCH_DEPTH + 1`` are out; None once stopped."""
        while not self._slots.acquire(timeout=0.1):
            if self._stop.is_set():
                return None
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            buf = BUFFERS.take(self.batch_size, self.tile_shape, self.pinned)
            self._held.append(buf)
            return buf

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self.ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Batch]:
        while True:
            item = self.ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Batch)
            yield item

    def release(self, batch: Batch) -> None:
        """The buffer of ``batch`` may be filled again."""
        self._idle.put(batch.inputs)
        self._slots.release()

    def close(self) -> None:
        """Stop the thread (also after an error in the consumer); buffers go back to the pool."""
        self._stop.set()
        self._thread.join()
        for buf in self._held:
            BUFFERS.give(buf, self.pinned)
        self._held.clear()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeviceFeeder:
    """Copies host batches to the model's device: non-blocking on a side CUDA stream, else as is.

    :meth:`to_device` returns the device tensor and a callable that waits until the host buffer
    may be reused (the copy is done); on the CPU both are immediate.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def to_device(self, host: torch.Tensor) -> tuple[torch.Tensor, Callable[[], None]]:
        """``host`` on the device, and a wait for the copy to finish."""
        if self.stream is None:
            return host, _nothing
        with torch.cuda.stream(self.stream):
            dev = host.to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.stream)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        dev.record_stream(torch.cuda.current_stream(self.device))
        return dev, copied.synchronize


def _nothing() -> None:
    return None


class BatchRunner:
    """Runs batches through a model, halving the batch size on out-of-memory errors."""

    def __init__(self, model: LoadedModel, batch_size: int, precision: Precision) -> None:
        self.model = model
        self.batch_size = max(1, batch_size)
        self.precision = precision
        self.feeder = DeviceFeeder(model.device)

    def run(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits for host ``inputs`` (N×C×S×S), in pieces of at most ``batch_size`` tiles."""
        outs = []
        start = 0
        while start < inputs.shape[0]:
            piece = inputs[start : start + self.batch_size]
            try:
                outs.append(self._forward(piece))
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise ModelError(
                        "the model ran out of device memory on a single tile: use a smaller "
                        "--tile, --precision bf16, or --device cpu"
                    ) from None
                self.batch_size = max(1, self.batch_size // 2)
                if self.model.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            start += piece.shape[0]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _forward(self, host: torch.Tensor) -> torch.Tensor:
        dev, wait = self.feeder.to_device(host)
        logits = self.model.predict_tensor(dev, precision=self.precision)
        wait()
        return logits


#: The process's batch runner, one at a time (one model per process: :func:`load_model_cached`),
#: keyed by the model object's id and the precision. The runner holds its model, so that id
#: cannot be reused by another model while the entry lives.
_RUNNERS: BoundedCache[tuple[int, str], BatchRunner] = BoundedCache(1, "batch runners")


def runner_for(model: LoadedModel, batch_size: int | None, precision: Precision,
               input_shape: tuple[int, int, int]) -> BatchRunner:
    """The process's runner for ``model``: a batch size that fitted is kept for later blocks.

    ``batch_size`` None: 4 on the CPU, on a GPU what fits its free memory
    (:func:`fit_batch_size`). A runner whose size is above an asked ``batch_size`` is replaced.
    """
    def make() -> BatchRunner:
        size = batch_size or default_batch_size(model, precision, input_shape)
        return BatchRunner(model, size, precision)

    def usable(runner: BatchRunner) -> bool:
        return batch_size is None or runner.batch_size <= batch_size

    return _RUNNERS.get_or_make((id(model), str(precision)), make, usable)


def default_batch_size(model: LoadedModel, precision: Precision,
                       input_shape: tuple[int, int, int]) -> int:
    """4 tiles on the CPU; on a GPU as many as fit one host thread's share of the free memory.

    The host threads of a GPU (:func:`~segpipe.pipeline.hostthreads.host_threads`) run their
    batches on it at once; each gets ``GPU_MEMORY_SHARE / threads`` of the free memory.
    """
    if model.device.type != "cuda":
        return 4
    per_tile = measure_tile_bytes(model, precision, input_shape)
    free, _total = torch.cuda.mem_get_info(model.device)
    threads = host_threads(str(model.device))
    return fit_batch_size(per_tile, free, share=GPU_MEMORY_SHARE / threads)


def fit_batch_size(per_tile_bytes: int, free_bytes: int, *, cap: int = MAX_GPU_BATCH,
                   share: float = GPU_MEMORY_SHARE) -> int:
    """Tiles per batch whose peak memory (``per_tile_bytes`` each) fits ``share`` of the free."""
    if per_tile_bytes <= 0:
        return cap
    return int(max(1, min(cap, (free_bytes * share) // per_tile_bytes)))


def measure_tile_bytes(model: LoadedModel, precision: Precision,
                       input_shape: tuple[int, int, int]) -> int:
    """Peak device memory of a forward pass on one tile (CUDA only)."""
    device = model.device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    x = torch.zeros((1, *input_shape), dtype=torch.float32, device=device)
    model.predict_tensor(x, precision=precision)
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)
