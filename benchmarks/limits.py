"""The unavoidable work, done directly: what no pipeline can beat. Run in a child process by
``iolimit.py``; prints one JSON line (timed ``seconds``, ``cpu_seconds``, ``megapixels``).

    python benchmarks/limits.py io --image in.tif --labels labels.npy --out out.tif
    python benchmarks/limits.py direct --image in.tif --model conv1x1.pt2 --out out.tif

- ``io``: read the input once (GDAL, every core) and write the given labels once as a COG with
  segpipe's settings (``fairio.py``). The labels to write (the bare model's labels of the same
  image, a ``.npy``, so the codec sees real labels) are loaded before the clock starts.
- ``direct``: the host side's floor with a 1×1 model: read once, normalize (the card's
  ``scale``), the 1×1 convolution as a matrix product ``W @ x + b`` and its argmax (one product
  per strip of 512 rows, to bound memory), write the COG once. ``W`` and ``b`` are the model
  file's own parameters, read before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fairio
from methods import normalize, timed

STRIP = 512


def run_io(args) -> dict:
    """Read the input once, write its (preloaded) labels once as a COG."""
    labels = np.load(args.labels)

    def work() -> dict:
        image, georef = fairio.read_whole(args.image)
        fairio.write_cog(labels, georef, args.out)
        return {"megapixels": image.shape[1] * image.shape[2] / 1e6}

    return timed(work)


def conv1x1_parameters(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``W`` (classes, bands) and ``b`` (classes,) of a 1×1 convolution saved as a program."""
    import torch

    state = torch.export.load(path).state_dict
    weight = next(v for v in state.values() if v.ndim == 4)
    bias = next(v for v in state.values() if v.ndim == 1)
    return (weight[:, :, 0, 0].detach().numpy().astype(np.float32),
            bias.detach().numpy().astype(np.float32))


def run_direct(args) -> dict:
    """Read once, ``argmax(W @ normalize(x) + b)`` strip by strip, write the COG once."""
    weight, bias = conv1x1_parameters(args.model)

    def work() -> dict:
        image, georef = fairio.read_whole(args.image)
        bands, h, w = image.shape
        labels = np.empty((h, w), np.uint8)
        for r in range(0, h, STRIP):
            x = normalize(image[:, r : r + STRIP]).reshape(bands, -1)
            logits = weight @ x
            logits += bias[:, None]
            labels[r : r + STRIP] = logits.argmax(0).reshape(-1, w)
        fairio.write_cog(labels, georef, args.out)
        return {"megapixels": h * w / 1e6}

    return timed(work)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=["io", "direct"])
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--labels", help="io: the labels to write (.npy)")
    ap.add_argument("--model", help="direct: the 1×1 model (.pt2)")
    args = ap.parse_args(argv)
    result = {"io": run_io, "direct": run_direct}[args.method](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
