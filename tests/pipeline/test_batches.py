"""The batch path: prefetch thread, reused buffers, out-of-memory back-off, batch fitting.

The same code runs on the CPU (copies are no-ops there); the ``gpu`` tests run it on CUDA.
Oracles: numpy slices of the block for the prefetched tiles, the model called on one tile at a
time for the back-off, a plain ``segpipe`` run for labels.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from segpipe.models import load_model
from segpipe.models.foundation import ModelError, Precision
from segpipe.pipeline import batches
from segpipe.pipeline.batches import BatchRunner, Prefetcher, fit_batch_size
from segpipe.pipeline.normalize import Normalizer
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.tiling import TilePlan
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.oracles import assert_labels_match, assert_logits_close
from tests.pipeline.test_exactness import oracle_labels, tiny_unet

HALO = 44  # at least the tiny same-padding U-Net's receptive-field radius (test_exactness)


def _block(batch: int):
    plan = TilePlan(100, 90, tile=16, halo=4, block=3)
    block = plan.block_at(0, 0)
    x = np.random.default_rng(0).standard_normal((2, block.read.height, block.read.width))
    return block, x.astype(np.float32)


@pytest.mark.parametrize("batch_size", [1, 2, 4, 9])
def test_prefetcher_yields_every_tile_in_order_from_reused_buffers(batch_size):
    block, x = _block(batch_size)
    seen, buffers = [], set()
    with Prefetcher(x, block.read, block.tiles, batch_size) as batch_iter:
        for batch in batch_iter:
            buffers.add(batch.inputs.data_ptr())
            for tile, values in zip(batch.tiles, batch.values):
                rows, cols = tile.read.relative_to(block.read).slices
                np.testing.assert_array_equal(values.numpy(), x[:, rows, cols])
                seen.append(tile.index)
            batch_iter.release(batch)
    assert seen == [t.index for t in block.tiles]  # all 9, in order, once
    assert len(buffers) <= batches.PREFETCH_DEPTH + 1 < len(block.tiles)


def test_later_blocks_reuse_the_buffers_sized_to_their_tiles():
    block, x = _block(64)

    def pointers_and_rows() -> tuple[set[int], set[int]]:
        ptrs, rows = set(), set()
        with Prefetcher(x, block.read, block.tiles, 64) as batch_iter:
            for batch in batch_iter:
                ptrs.add(batch.inputs.data_ptr())
                rows.add(batch.inputs.shape[0])
                batch_iter.release(batch)
        return ptrs, rows

    first, rows = pointers_and_rows()
    second, _ = pointers_and_rows()
    assert rows == {len(block.tiles)}  # 9 tiles, not the 64 the batch size allows
    assert second == first  # the next block fills the same memory (pinned on a GPU)


def test_prefetcher_error_reaches_the_consumer_and_close_does_not_hang():
    block, x = _block(2)
    with pytest.raises(ValueError), Prefetcher(x[:, :10, :10], block.read, block.tiles, 2) as it:
        list(it)  # the tiles do not fit the 10×10 pixels: the thread's error is raised here
    with Prefetcher(x, block.read, block.tiles, 1) as it:  # consumer stops after one batch
        next(iter(it))


class _Fake:
    """A LoadedModel stand-in that runs out of memory above ``limit`` tiles per call."""

    device = torch.device("cpu")

    def __init__(self, model, limit: int) -> None:
        self.model, self.limit, self.calls = model, limit, []

    def predict_tensor(self, x, *, precision=Precision.FP32):
        self.calls.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return self.model.predict_tensor(x, precision=precision)


def test_out_of_memory_halves_the_batch_and_gives_the_same_logits(tmp_path):
    model = load_model(tiny_unet(tmp_path / "m.pt", 2, "same"))
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((8, 2, 32, 32))
                         .astype(np.float32))
    fake = _Fake(model, limit=3)
    runner = BatchRunner(fake, 8, Precision.FP32)
    logits = runner.run(x)
    assert runner.batch_size == 2  # 8 → 4 → 2, kept for the next batches
    assert fake.calls == [8, 4, 2, 2, 2, 2]
    one_by_one = torch.cat([model.predict_tensor(x[i : i + 1]) for i in range(8)])
    # other batch sizes pick other kernels: equal within the contract, not bit for bit
    assert_logits_close(logits, one_by_one)
    for got, expected in zip(logits, one_by_one):
        assert_labels_match(got.argmax(0), expected)
    with pytest.raises(ModelError, match="single tile"):
        BatchRunner(_Fake(model, limit=0), 4, Precision.FP32).run(x[:2])


def test_a_run_that_runs_out_of_memory_writes_the_same_labels(tmp_path, monkeypatch):
    from segpipe.pipeline import segment

    src = write_geotiff(tmp_path / "in.tif", smooth_image((2, 150, 140), "uint8", seed=4))
    model_path = tiny_unet(tmp_path / "m.pt", 2, "same")
    real, fakes = segment.load_model_cached, []

    def flaky(path, device, sha256=None, **kw):
        fake = _Fake(real(path, device, sha256, **kw), limit=1)
        fakes.append(fake)
        return fake

    labels, summaries = {}, {}
    for name in ("plain", "oom"):
        if name == "oom":
            monkeypatch.setattr(segment, "load_model_cached", flaky)
            batches._RUNNERS.clear()
        out = tmp_path / f"{name}.tif"
        summaries[name] = run_one(RunOptions.of(
            str(src), str(out), model=str(model_path), tile=32, halo=HALO, batch_size=4,
            block_pixels=64, device="cpu"))
        with rasterio.open(out) as ds:
            labels[name] = ds.read(1)
    assert any(4 in f.calls for f in fakes) and any(2 in f.calls for f in fakes)
    # batches of 4 and of 1 run other kernels: both equal the whole image's labels, ties aside
    with rasterio.open(src) as ds:
        image = ds.read()
    _, logits, _ = oracle_labels(model_path, image, HALO,
                                 Normalizer.from_dict(summaries["plain"]["normalizer"]))
    for name in ("plain", "oom"):
        assert_labels_match(labels[name], logits)
    batches._RUNNERS.clear()


@pytest.mark.parametrize(
    ("per_tile", "free", "expected"),
    [(100, 1000, 6), (100, 10, 1), (1, 10**9, batches.MAX_GPU_BATCH), (0, 5, 64)],
)
def test_fit_batch_size(per_tile, free, expected):
    assert fit_batch_size(per_tile, free) == expected


def test_default_batch_size_on_the_cpu_is_four(tmp_path):
    model = load_model(tiny_unet(tmp_path / "m.pt", 1, "same"))
    assert batches.default_batch_size(model, Precision.FP32, (1, 64, 64)) == 4


@pytest.mark.gpu
def test_cuda_batches_use_pinned_buffers_and_fit_free_memory(tmp_path):
    model = load_model(tiny_unet(tmp_path / "m.pt", 2, "same"), device="cuda")
    block, x = _block(4)
    with Prefetcher(x, block.read, block.tiles, 4, pinned=True) as it:
        runner = BatchRunner(model, 4, Precision.FP32)
        for batch in it:
            assert batch.inputs.is_pinned()
            logits = runner.run(batch.values)
            expected = model.predict(batch.values.numpy())  # before the buffer is refilled
            it.release(batch)
            assert_logits_close(logits, expected)
    size = batches.default_batch_size(model, Precision.FP32, (2, 256, 256))
    assert 1 <= size <= batches.MAX_GPU_BATCH
