"""The model contenders, each run in its own child process by ``bench.py`` / ``iolimit.py``.

Prints one JSON line: the timed ``seconds`` and ``cpu_seconds`` (this process, every thread,
GDAL's included) and the output ``megapixels``. Every contender sets torch to ``--threads``
threads (the benchmark passes the count segpipe's own process gets) and lays its batches out as
``--layout`` (``nchw`` or ``channels_last``: the benchmark first measures both with ``layout``
and passes the faster).

    python benchmarks/methods.py layout --model m.pt --side 576 [--reps 5]
    python benchmarks/methods.py bare --image in.tif --model m.pt [--labels-out l.npy]
    python benchmarks/methods.py monai --image in.tif --model m.pt --mode gaussian --out o.tif
    python benchmarks/methods.py loop --image in.tif --model m.pt --out o.tif

- ``bare``: the model alone on every tile of the image (T + 2H)², batches of 4, already in
  memory: the limit. Only the forward passes and the argmax are timed.
- ``monai``: MONAI's ``sliding_window_inference`` (same window and overlap as segpipe's tiles),
  timed from the closed input file to the closed output COG: read once (GDAL, every core),
  normalize, infer, argmax, write the labels once as a COG with segpipe's settings
  (``fairio.py``).
- ``loop``: the loop users write: 512² windows without overlap read in turn (GDAL on every
  core), batches of 4, labels kept in memory and written once as the same COG. Timed the same.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fairio
from workloads import HALO, TILE

LAYOUTS = ("nchw", "channels_last")
BATCH = 4


def normalize(x: np.ndarray) -> np.ndarray:
    """The card's ``scale``: ``(x - min) / (max - min)`` of the integer type, as float32."""
    info = np.iinfo(x.dtype)
    out = x.astype(np.float32)
    out -= np.float32(info.min)
    out *= np.float32(1.0 / (float(info.max) - float(info.min)))
    return out


def load(model: str, layout: str):
    """The model as plain eager float32 PyTorch, its inputs laid out as ``layout``."""
    from segpipe.models import load_model

    return load_model(model, device="cpu", channels_last=layout == "channels_last")


def tiles_of(x: np.ndarray) -> np.ndarray:
    """Every tile (bands, T + 2H, T + 2H) of the mirror-extended image, row by row."""
    ext = np.pad(x, ((0, 0), (HALO, HALO), (HALO, HALO)), mode="symmetric")
    size = TILE + 2 * HALO
    return np.stack([ext[:, r : r + size, c : c + size]
                     for r in range(0, x.shape[1], TILE) for c in range(0, x.shape[2], TILE)])


def timed(work: Callable[[], dict]) -> dict:
    """``work()``'s result with its wall and CPU seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    result = work()
    return {**result, "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu}


def run_layout(args) -> dict:
    """Both layouts on the same batch, alternating, ``--reps`` times each: the faster one."""
    batch = torch.rand(BATCH, 3, args.side, args.side)
    models = {lay: load(args.model, lay) for lay in LAYOUTS}
    for m in models.values():
        m(batch)  # warm-up (oneDNN primitives)
    times: dict[str, list[float]] = {lay: [] for lay in LAYOUTS}
    for _ in range(args.reps):
        for lay, m in models.items():
            start = time.perf_counter()
            m(batch).argmax(1)
            times[lay].append(time.perf_counter() - start)
    medians = {lay: float(np.median(t)) for lay, t in times.items()}
    return {"best": min(medians, key=medians.__getitem__), "median_seconds": medians,
            "seconds_per_batch": times, "batch": [BATCH, 3, args.side, args.side]}


def run_bare(args) -> dict:
    """The model alone on the image's tiles, batches of 4 already in memory."""
    model = load(args.model, args.layout)
    image = fairio.read_whole(args.image)[0]
    tiles = tiles_of(normalize(image))
    batches = [torch.from_numpy(np.ascontiguousarray(tiles[i : i + BATCH]))
               for i in range(0, len(tiles), BATCH)]
    model(batches[0]).argmax(1)  # warm-up
    labels: list[torch.Tensor] = []

    def work() -> dict:
        for b in batches:
            labels.append(model(b).argmax(1))
        return {"batches": len(batches)}

    result = timed(work)
    if args.labels_out:
        np.save(args.labels_out, stitch(torch.cat(labels).to(torch.uint8).numpy(), image.shape))
    return {**result, "megapixels": len(tiles) * TILE * TILE / 1e6, "tiles": len(tiles)}


def stitch(tile_labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The tiles' centres (T², halo cropped) put back in place: the image's labels."""
    out = np.empty(shape[-2:], np.uint8)
    positions = [(r, c) for r in range(0, shape[-2], TILE) for c in range(0, shape[-1], TILE)]
    for (r, c), lab in zip(positions, tile_labels):
        out[r : r + TILE, c : c + TILE] = lab[HALO : HALO + TILE, HALO : HALO + TILE]
    return out


def run_monai(args) -> dict:
    """Read once, MONAI ``sliding_window_inference``, argmax, write the COG once."""
    from monai.inferers import sliding_window_inference

    model = load(args.model, args.layout)
    window = TILE + 2 * HALO
    # Gaussian: scan interval int(window * (1 - overlap)) == TILE, as segpipe's tiles
    overlap = (2 * HALO - 0.5) / window if args.mode == "gaussian" else 0.0
    model(torch.zeros(1, 3, window, window))  # warm-up

    def work() -> dict:
        image, georef = fairio.read_whole(args.image)
        x = torch.from_numpy(normalize(image))[None]
        with torch.inference_mode():
            logits = sliding_window_inference(
                x, roi_size=(window, window), sw_batch_size=BATCH, predictor=model,
                overlap=overlap, mode=args.mode, sigma_scale=0.125, padding_mode="reflect",
                progress=False,
            )
            labels = logits[0].argmax(0).to(torch.uint8).numpy()
        fairio.write_cog(labels, georef, args.out)
        return {"megapixels": labels.size / 1e6}

    return {**timed(work), "overlap": overlap, "mode": args.mode}


def run_loop(args) -> dict:
    """512² windows in turn, batches of 4, labels in memory, the COG written once."""
    import rasterio
    from rasterio.windows import Window

    net = load(args.model, args.layout)
    net(torch.zeros(1, 3, TILE, TILE))  # warm-up

    def work() -> dict:
        with rasterio.Env(**fairio.ALL_CORES), rasterio.open(args.image) as src:
            georef = {"crs": src.crs, "transform": src.transform}
            labels = np.empty((src.height, src.width), np.uint8)
            windows = [Window(c, r, min(TILE, src.width - c), min(TILE, src.height - r))
                       for r in range(0, src.height, TILE) for c in range(0, src.width, TILE)]
            for i in range(0, len(windows), BATCH):
                group = windows[i : i + BATCH]
                x = np.stack([normalize(src.read(window=w)) for w in group])
                out = net(torch.from_numpy(x)).argmax(1).to(torch.uint8).numpy()
                for w, lab in zip(group, out):
                    labels[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = lab
        fairio.write_cog(labels, georef, args.out)
        return {"megapixels": labels.size / 1e6}

    return timed(work)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=["layout", "bare", "monai", "loop"])
    ap.add_argument("--image")
    ap.add_argument("--model", required=True)
    ap.add_argument("--layout", choices=LAYOUTS, default="channels_last")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--side", type=int, default=TILE + 2 * HALO, help="layout: batch side")
    ap.add_argument("--reps", type=int, default=5, help="layout: runs of each")
    ap.add_argument("--mode", default="gaussian", choices=["gaussian", "constant"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--labels-out", default=None, help="bare: the stitched labels (.npy)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = {"layout": run_layout, "bare": run_bare, "monai": run_monai, "loop": run_loop}
    result = run[args.method](args)
    if args.method != "layout":
        result["layout"] = args.layout
    print(json.dumps({**result, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
