"""The bundled nuclei model splits touching nuclei as its card states (issue 19, item 5).

A run with ``--instance-labels`` (segpipe's defaults: watershed, seeds 5 px apart) on the
held-out columns 384–511 of stardist's ``img2d.tif``, scored against its instance mask
``mask2d.tif`` by a matcher written here: the IoU of every (truth, prediction) pair from boolean
masks, one object at a time, and a match wherever it is ≥ 0.5 (at that threshold the matches
are one to one without any assignment step: two would need a truth object made of exactly two
predicted halves); ``scripts/train_zoo.py`` computes the card's figure from a joint histogram
with scipy's Hungarian assignment instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from segpipe.models.bundled import zoo_dir
from segpipe.models.formats import checkpoint_card
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one

SPLIT_COL = 384  # scripts/zoo_recipes.py NUCLEI_SPLIT_COL


def object_f1(pred: np.ndarray, truth: np.ndarray) -> tuple[float, int, int, int]:
    """F1, matches, predicted and true objects at IoU ≥ 0.5, object by object."""
    matched = 0
    for t in np.unique(truth[truth > 0]):
        mask = truth == t
        for p in np.unique(pred[mask]):
            if p and (mask & (pred == p)).sum() / (mask | (pred == p)).sum() >= 0.5:
                matched += 1
    predicted, true = len(np.unique(pred[pred > 0])), len(np.unique(truth[truth > 0]))
    return 2 * matched / (predicted + true), matched, predicted, true


@pytest.mark.slow  # the bundled model over a 512 × 128 crop and a watershed: about 10 s
def test_nuclei_object_f1_on_the_heldout_columns_is_what_the_card_states(samples, tmp_path):
    image = tifffile.imread(samples / "nuclei2d.tif")[:, SPLIT_COL:]
    truth = tifffile.imread(samples / "nuclei2d_mask.tif")[:, SPLIT_COL:].astype(np.int64)
    src = tmp_path / "heldout.ome.tif"
    tifffile.imwrite(src, np.ascontiguousarray(image), ome=True, metadata={"axes": "YX"})
    out = tmp_path / "pred.tif"
    summary = run_one(RunOptions.of(str(src), str(out), device="cpu", instance_labels=True))
    assert summary["model"]["name"] == "nuclei"
    pred = tifffile.imread(tmp_path / "pred.instances.tif").astype(np.int64)
    f1, matched, predicted, true = object_f1(pred, truth)
    card = checkpoint_card(zoo_dir() / "nuclei.pt")
    assert card is not None
    stated = card.metrics["heldout_instances"]
    assert (stated["method"], stated["min_distance"], stated["iou_threshold"]) == (
        "watershed", 5, 0.5)  # the run's defaults, which this test used
    assert f1 == pytest.approx(stated["f1"], abs=0.01), (matched, predicted, true, stated)
    assert f1 >= 0.7
    assert matched / predicted == pytest.approx(stated["precision"], abs=0.01)
    assert matched / true == pytest.approx(stated["recall"], abs=0.01)
    assert f"object F1 {stated['f1']:.2f}" in card.description
