"""segpipe.segment on Dask arrays: lazy, chunked as the run's blocks, the CLI's labels."""

from __future__ import annotations

import cloudpickle
import dask
import dask.array as da
import numpy as np

import segpipe
from segpipe.pipeline.tiling import TilePlan
from tests.api.helpers import cli_labels, read_image, summary_normalizer
from tests.pipeline.oracles import assert_labels_match
from tests.pipeline.test_exactness import oracle_labels, tiny_unet

OPTIONS = dict(tile=16, normalize="meanstd", block_pixels=32)


def test_dask_labels_equal_the_cli_run_and_are_chunked_as_its_blocks(tmp_path, geotiff):
    src = geotiff((3, 75, 101), "uint8", seed=11)
    model = tiny_unet(tmp_path / "unet.pt", 3, "valid")
    expected, summary = cli_labels(src, model, tmp_path / "cli.tif", **OPTIONS)
    image = read_image(src)
    lazy = da.from_array(image, chunks=(3, 17, 23))  # chunks unlike the blocks

    labels = segpipe.segment(lazy, str(model), device="cpu", **OPTIONS)

    assert isinstance(labels, da.Array) and labels.dtype == np.uint8
    assert isinstance(labels._meta, np.ndarray) and labels._meta.dtype == np.uint8
    plan = TilePlan(75, 101, 16, summary["halo"], block=2)
    rows = tuple(plan.block_core(bi, 0).height for bi in range(plan.block_grid[0]))
    cols = tuple(plan.block_core(0, bj).width for bj in range(plan.block_grid[1]))
    assert labels.chunks == (rows, cols) == ((32, 32, 11), (32, 32, 32, 5))
    computed = labels.compute(scheduler="threads")
    np.testing.assert_array_equal(computed, expected)
    _, logits, _ = oracle_labels(model, image, summary["halo"], summary_normalizer(summary))
    assert_labels_match(computed, logits)


class PixelsRead(AssertionError):
    """Raised by a chunk of the input when it is computed."""


def _refuse(shape):
    raise PixelsRead(f"a chunk {shape} of the input was read")


def refusing_array(bands: int, height: int, width: int, chunk: int) -> da.Array:
    """A Dask array whose every chunk fails the test when it is computed."""
    rows = []
    for r in range(0, height, chunk):
        row = []
        for c in range(0, width, chunk):
            shape = (bands, min(chunk, height - r), min(chunk, width - c))
            row.append(da.from_delayed(dask.delayed(_refuse)(shape), shape, dtype=np.uint16))
        rows.append(row)
    return da.block(rows)


def test_building_the_graph_reads_no_pixels(tmp_path):
    model = tiny_unet(tmp_path / "unet.pt", 2, "valid")
    image = refusing_array(2, 90, 70, 25)

    labels = segpipe.segment(image, str(model), device="cpu", **OPTIONS)  # reads nothing

    graph = labels.__dask_graph__()
    deps = graph.get_all_dependencies()
    blocks = [k for k in deps if isinstance(k, str) and k.startswith("segpipe-block-")]
    stats = [k for k in deps if isinstance(k, str) and k.startswith("segpipe-statistics-")]
    assert len(blocks) == 3 * 3 and len(stats) == 1  # 90x70 in blocks of 32 px
    assert all(stats[0] in _ancestors(deps, b) for b in blocks)
    shipped = cloudpickle.loads(cloudpickle.dumps(dict(graph)))  # as to distributed workers
    assert set(shipped) == set(dict(graph))
    try:
        labels.compute(scheduler="sync")
    except PixelsRead:
        pass
    else:
        raise AssertionError("computing the labels read no pixels: the helper cannot fail")


def _ancestors(deps: dict, key) -> set:
    seen: set = set()
    todo = [key]
    while todo:
        for d in deps.get(todo.pop(), ()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_numpy_and_dask_give_the_same_labels_on_a_big_block_grid(tmp_path, geotiff):
    src = geotiff((1, 130, 67), "uint16", seed=2)
    model = tiny_unet(tmp_path / "unet.pt", 1, "same")
    image = read_image(src)
    options = dict(tile=24, halo=44, normalize="percentile", block_pixels=48, device="cpu")
    eager = segpipe.segment(image, str(model), **options)
    lazy = segpipe.segment(da.from_array(image, chunks=(1, 50, 50)), str(model), **options)
    expected, _ = cli_labels(src, model, tmp_path / "cli.tif",
                             **{k: v for k, v in options.items() if k != "device"})
    np.testing.assert_array_equal(eager, expected)
    np.testing.assert_array_equal(lazy.compute(), expected)


def test_lazy_labels_compute_on_a_distributed_cluster(tmp_path, geotiff):
    from distributed import Client, LocalCluster

    src = geotiff((3, 130, 110), "uint8", seed=12)
    model = tiny_unet(tmp_path / "unet.pt", 3, "valid")
    expected, _ = cli_labels(src, model, tmp_path / "cli.tif", **OPTIONS)
    lazy = segpipe.segment(da.from_array(read_image(src), chunks=(3, 64, 64)), str(model),
                           device="cpu", **OPTIONS)
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                     dashboard_address=None) as cluster,
        Client(cluster),
    ):
        labels = lazy.compute()  # the worker process loads the model by its path
    np.testing.assert_array_equal(labels, expected)
