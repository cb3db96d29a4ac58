"""Planning and building the block submissions of a 100k × 100k image computes nothing."""

from __future__ import annotations

import pickle
import time

import numpy as np
import rasterio
from affine import Affine

from segpipe.flows.cluster import submit_blocks
from segpipe.pipeline import plan as plan_module
from segpipe.pipeline import segment as segment_module
from segpipe.pipeline.normalize import Normalizer
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.plan import plan_run
from segpipe.pipeline.tiling import TilePlan


class RecordingClient:
    """Stands in for a distributed Client: records what would be submitted, runs nothing."""

    def __init__(self):
        self.calls = []

    def map(self, func, *iterables, key, **kw):
        self.calls.append((func, iterables, key, kw))
        return [Handle(k) for k in key]


class Handle:
    def __init__(self, key):
        self.key = key


def sparse_geotiff(path, size: int) -> None:
    """A size × size uint8 GeoTIFF with no block written (GDAL's sparse files): a few KB."""
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8",
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                   SPARSE_OK=True, BIGTIFF="YES", crs="EPSG:32621",
                   transform=Affine(10.0, 0, 300000.0, 0, -10.0, 5000000.0))
    with rasterio.open(path, "w", **profile):
        pass


def test_100k_square_plan_and_submissions_compute_nothing(tmp_path, assets, monkeypatch):
    src = tmp_path / "huge.tif"
    sparse_geotiff(src, 100_000)
    calls = {"segment": 0, "read": 0}

    def no_segment(*a, **k):
        calls["segment"] += 1
        raise AssertionError("a block was computed while building the graph")

    monkeypatch.setattr(segment_module, "segment_block", no_segment)
    # the plan asks for ~28 GiB of work directory on purpose; free space is not what is tested
    monkeypatch.setattr(plan_module, "check_free_space", lambda plan: None)
    from segpipe.pipeline.io.gdal import GdalReader

    real_read = GdalReader.read

    def counting_read(self, window):
        calls["read"] += 1
        return real_read(self, window)

    monkeypatch.setattr(GdalReader, "read", counting_read)

    start = time.perf_counter()
    options = RunOptions.of(str(src), str(tmp_path / "huge.labels.tif"),
                            model=str(assets["model"]), tile=512, device="cpu")
    plan = plan_run(options)
    # a fixed normalizer: statistics would read pixels; they are their own stage
    plan = plan.with_normalizer(Normalizer(plan.normalization.method, (0.0,), (1.0,)))
    todo = list(plan.tiles.block_indices())
    client = RecordingClient()
    futures, by_key = submit_blocks(client, plan.job(), todo, "run")
    seconds = time.perf_counter() - start
    print(f"plan + submissions for 100k x 100k: {seconds:.2f} s, {len(todo)} block tasks")

    assert calls == {"segment": 0, "read": 0}  # no pixel read, no block run
    per_side = -(-100_000 // 1024)  # default blocks of 1024 px (two 512 px tiles)
    assert plan.tiles.n_blocks == len(todo) == len(futures) == len(by_key) == per_side**2
    # per block row: one call for the copies it needs first (the first row: its own and the
    # next row's; then the next row's; the last row: none), one for its blocks
    blocks = [c for c in client.calls if c[0].__name__ == "run_block"]
    feeds = [c for c in client.calls if c[0].__name__ == "feed_block"]
    assert len(blocks) == per_side and len(feeds) == per_side - 1
    assert [c[0].__name__ for c in client.calls[:3]] == ["feed_block", "run_block", "feed_block"]
    assert sorted(i for c in blocks for i in c[1][1]) == sorted(todo)
    assert sorted(i for c in feeds for i in c[1][2]) == sorted(todo)  # each block copied once
    _, iterables, _, kw = blocks[0]
    assert kw["retries"] == 2 and kw["pure"] is False
    jobs, indices, ready = iterables[0], iterables[1], iterables[3]
    assert all(j is plan.job() or j == plan.job() for j in jobs[:3])
    # block 0_0 waits for the copies of the four blocks its halo reads
    assert sorted(h.key for h in ready[0]) == [f"segpipe-run-feed-{i}_{j}"
                                               for i in (0, 1) for j in (0, 1)]
    # tasks carry a small job and a block index, never arrays
    assert len(pickle.dumps((jobs[0], indices[0]))) < 4096
    assert not any(isinstance(x, np.ndarray) for x in vars(jobs[0]).values())
    keys = [k for c in client.calls for k in c[2]]
    assert len(set(keys)) == len(keys)


def test_cheap_block_indices_and_cores_match_the_built_blocks():
    plan = TilePlan(1000, 700, 64, 8, block=3)
    blocks = list(plan.blocks())
    assert [b.index for b in blocks] == list(plan.block_indices())
    assert [b.core for b in blocks] == [plan.block_core(*b.index) for b in blocks]
    assert sum(plan.block_core(*i).size for i in plan.block_indices()) == 1000 * 700
