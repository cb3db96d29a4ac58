"""The independent oracle every contender's labels are compared with: one eager float32 forward
pass over the whole image in NCHW (no tiling, no channels-last, no segpipe pipeline code),
written by the benchmark itself as a ``.npy`` of uint8 labels.

The image is normalized with the card's ``scale``, mirror-extended by the halo on every side
(numpy ``symmetric``, as segpipe extends an image's edges) plus enough on the bottom/right for a
side the network takes (a multiple of ``--multiple``), run once, and cropped back.

    python benchmarks/reference.py --image in.tif --model m.pt --out ref.npy [--halo 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from methods import normalize
from workloads import HALO


def reference_labels(image: np.ndarray, model: str, halo: int, multiple: int) -> np.ndarray:
    """Labels (h, w) of one NCHW float32 forward pass over the mirror-extended image."""
    from segpipe.models import load_model

    net = load_model(model, device="cpu", channels_last=False)
    _, h, w = image.shape
    bottom = -(h + 2 * halo) % multiple + halo
    right = -(w + 2 * halo) % multiple + halo
    ext = np.pad(normalize(image), ((0, 0), (halo, bottom), (halo, right)), mode="symmetric")
    x = torch.from_numpy(np.ascontiguousarray(ext[None]))
    assert x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    logits = net(x)[0]
    return logits[:, halo : halo + h, halo : halo + w].argmax(0).to(torch.uint8).numpy()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--halo", type=int, default=HALO)
    ap.add_argument("--multiple", type=int, default=16, help="the network's input side divides")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    import rasterio

    if args.threads:
        torch.set_num_threads(args.threads)
    with rasterio.open(args.image) as ds:
        image = ds.read()
    start = time.perf_counter()
    labels = reference_labels(image, args.model, args.halo, args.multiple)
    np.save(args.out, labels)
    print(json.dumps({"seconds": time.perf_counter() - start, "shape": list(labels.shape)}))


if __name__ == "__main__":
    main()
