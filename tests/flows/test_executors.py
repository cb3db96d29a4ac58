"""One stage sequence, three executors: in-process, a LocalCluster, and ``dask scheduler`` with
two ``dask worker`` processes on 127.0.0.1 give byte-identical labels and probabilities, and the
crop blend equals one whole-image forward pass (the overlap-tile contract).

The matrix: a same-padding U-Net with ``--halo``, a 3-band uint16 image with nodata, blocks of
one 32 px tile (so the image spans 4 × 5 blocks and the Gaussian neighbour ring crosses block
borders), probabilities on. torch runs one thread in every executor.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch

from segpipe.flows.cluster import Cluster, ClusterSpec, DaskExecutor
from segpipe.pipeline.executor import InProcessExecutor
from segpipe.pipeline.normalize import Normalizer
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import RunContext, run_one
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.test_exactness import oracle_labels, tiny_unet

SHAPE = (3, 120, 150)
HALO = 44  # the receptive-field radius of the depth-2 same-padding U-Net
NODATA = 0


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("matrix")
    image = smooth_image(SHAPE, "uint16", seed=5)
    image[image == NODATA] = 1
    image[:, 10:30, 20:50] = NODATA  # a nodata patch across a block border
    src = write_geotiff(d / "scene.tif", image, nodata=NODATA)
    model = tiny_unet(d / "same.pt", 3, "same", classes=3)
    return {"dir": d, "src": src, "model": model, "image": image}


def segment(scene, out, executor, blend: str) -> dict:
    options = RunOptions.of(
        str(scene["src"]), str(out), model=str(scene["model"]), tile=32, halo=HALO,
        block_pixels=32, blend=blend, probabilities=True, device="cpu", normalize="meanstd",
    )
    return run_one(options, RunContext(executor))


def read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("blend", ["crop", "gaussian"])
def test_three_executors_give_identical_bytes(scene, dask_processes, tmp_path, blend,
                                              one_torch_thread):
    outs = {}
    summary = segment(scene, tmp_path / "inproc.tif", InProcessExecutor(), blend)
    outs["inproc"] = tmp_path / "inproc.tif"
    with Cluster(ClusterSpec(workers=2)) as cluster:  # 2 cores: one torch thread per worker
        segment(scene, tmp_path / "local.tif", DaskExecutor(cluster), blend)
    outs["local"] = tmp_path / "local.tif"
    remote = dask_processes(workers=2)
    with Cluster(ClusterSpec(scheduler=remote.address)) as cluster:
        remote_summary = segment(scene, tmp_path / "remote.tif", DaskExecutor(cluster), blend)
    outs["remote"] = tmp_path / "remote.tif"
    assert summary["blocks"] == 20 and len(remote_summary["workers"]) == 2

    labels = {k: read(p) for k, p in outs.items()}
    probs = {k: read(p.with_name(f"{p.stem}.probabilities.tif")) for k, p in outs.items()}
    for name in ("local", "remote"):
        assert outs[name].read_bytes() == outs["inproc"].read_bytes()
        np.testing.assert_array_equal(labels[name], labels["inproc"])
        np.testing.assert_array_equal(probs[name], probs["inproc"])
    assert probs["inproc"].shape == (3, *SHAPE[1:])

    nodata = (scene["image"] == NODATA).all(axis=0)
    assert (labels["inproc"][0][nodata] == 255).all()
    if blend == "crop":  # the contract: exact where the halo covers the receptive field
        normalizer = Normalizer.from_dict(summary["normalizer"])
        expected, _, _ = oracle_labels(scene["model"], scene["image"], HALO, normalizer, NODATA)
        np.testing.assert_array_equal(labels["inproc"][0][~nodata], expected[~nodata])


@pytest.mark.parametrize("blend", ["crop", "gaussian"])
def test_host_threads_give_the_bytes_of_one_thread(scene, tmp_path, blend):
    """A GPU's blocks run on host threads sharing one model: same labels, probabilities, areas."""
    one = segment(scene, tmp_path / "one.tif", InProcessExecutor(threads=1), blend)
    many = segment(scene, tmp_path / "many.tif", InProcessExecutor(threads=3), blend)
    assert (tmp_path / "many.tif").read_bytes() == (tmp_path / "one.tif").read_bytes()
    np.testing.assert_array_equal(read(tmp_path / "many.probabilities.tif"),
                                  read(tmp_path / "one.probabilities.tif"))
    assert many["blocks"] == one["blocks"] == 20
    assert many["classes"] == one["classes"]  # pixels, areas and objects per class
    assert sum(c["objects"] for c in many["classes"]) > 3
    labels = read(tmp_path / "many.tif")[0]
    nodata = (scene["image"] == NODATA).all(axis=0)
    if blend == "crop":  # and both equal the whole-image forward pass
        normalizer = Normalizer.from_dict(many["normalizer"])
        expected, _, _ = oracle_labels(scene["model"], scene["image"], HALO, normalizer, NODATA)
        np.testing.assert_array_equal(labels[~nodata], expected[~nodata])


def test_host_threads_report_a_failing_block_and_finish_the_others(monkeypatch):
    import segpipe.pipeline.executor as executor

    def fake(job, index, run_id):
        if index == (1, 1):
            raise RuntimeError("injected")
        return index

    monkeypatch.setattr(executor, "segment_and_record", fake)
    done, failed = [], {}

    class Sink:
        def done(self, record) -> None:
            done.append(record)

        def failed(self, index, message) -> None:
            failed[index] = message

        def idle(self) -> None:
            pass

    blocks = [(i, j) for i in range(3) for j in range(4)]
    job = SimpleNamespace(feed=None)  # the input is read in place: no copy runs ahead
    InProcessExecutor(threads=3).run(job, blocks, "run", Sink())  # type: ignore[arg-type]
    assert sorted(done) == sorted(set(blocks) - {(1, 1)})
    assert failed == {(1, 1): "RuntimeError: injected"}


@pytest.mark.slow
def test_a_gpu_worker_takes_blocks_on_host_threads(scene, tmp_path, monkeypatch, one_torch_thread):
    """The LocalCluster layout for one GPU: one worker, 2 Dask threads, GPU resource 2.

    No GPU here: the layout is what a machine with one GPU and two cores gets, the blocks run
    on the CPU through the same tasks (each takes one GPU unit), and the bytes are the same.
    """
    import segpipe.flows.cluster as cluster_module

    monkeypatch.setattr(cluster_module, "gpu_count", lambda: 1)
    monkeypatch.setattr(cluster_module, "available_cores", lambda: 2)
    reference = segment(scene, tmp_path / "one.tif", InProcessExecutor(threads=1), "crop")
    with Cluster(ClusterSpec()) as cluster:
        summary = segment(scene, tmp_path / "gpu.tif", DaskExecutor(cluster), "crop")
        workers = list(cluster.client().scheduler_info(n_workers=-1)["workers"].values())
    assert [(w["nthreads"], w["resources"]) for w in workers] == [(2, {"GPU": 2})]
    assert cluster.gpu_resource
    assert len(summary["workers"]) == 1 and summary["blocks"] == reference["blocks"] == 20
    assert (tmp_path / "gpu.tif").read_bytes() == (tmp_path / "one.tif").read_bytes()
    labels = read(tmp_path / "gpu.tif")[0]  # and the whole-image forward pass (crop)
    nodata = (scene["image"] == NODATA).all(axis=0)
    normalizer = Normalizer.from_dict(summary["normalizer"])
    expected, _, _ = oracle_labels(scene["model"], scene["image"], HALO, normalizer, NODATA)
    np.testing.assert_array_equal(labels[~nodata], expected[~nodata])


def test_local_cluster_workers_leave_ctrl_c_to_the_driver():
    """Ctrl-C reaches the whole process group; the driver's own workers must not unwind on it
    (a worker that did printed a traceback on the run's stderr while the driver closed the
    cluster). Oracle: the signal disposition in the worker processes, and a SIGINT sent to
    each worker process leaving it alive and answering."""
    import os
    import signal
    import time

    import psutil

    with Cluster(ClusterSpec(workers=2)) as cluster:
        client = cluster.client()
        ignored = client.run(lambda: signal.getsignal(signal.SIGINT) == signal.SIG_IGN)
        assert list(ignored.values()) == [True, True]
        pids = client.run(os.getpid)
        for pid in pids.values():
            os.kill(pid, signal.SIGINT)
        time.sleep(1.0)
        assert all(psutil.pid_exists(pid) for pid in pids.values())
        assert client.run(os.getpid) == pids
