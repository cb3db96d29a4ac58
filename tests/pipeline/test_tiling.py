"""Geometry of the overlap-tile plan, checked against numpy's own symmetric padding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe.models.foundation import InputError
from segpipe.pipeline.tiling import TilePlan, Window, mirror_indices, read_mirrored

sizes = st.integers(min_value=1, max_value=70)


@settings(max_examples=150, deadline=None)
@given(h=sizes, w=sizes, tile=st.integers(1, 32), halo=st.integers(0, 40),
       extra=st.integers(0, 5), block=st.integers(1, 4))
def test_cores_partition_the_image_exactly_once(h, w, tile, halo, extra, block):
    plan = TilePlan(h, w, tile, halo, extra, block=block)
    owned = np.zeros((h, w), int)
    for t in plan.tiles():
        assert t.core.row % tile == 0 and t.core.col % tile == 0
        owned[t.core.slices] += 1
    assert (owned == 1).all()
    by_blocks = np.zeros((h, w), int)
    for b in plan.blocks():
        by_blocks[b.core.slices] += 1
        for t in b.tiles:  # every own tile lies in the block's core and read window
            assert t.core.intersection(b.core) == t.core
            assert b.read.intersection(t.read) == t.read
    assert (by_blocks == 1).all()
    assert plan.n_tiles == len(list(plan.tiles()))


@settings(max_examples=150, deadline=None)
@given(h=sizes, w=sizes, tile=st.integers(1, 24), halo=st.integers(0, 150),
       extra=st.integers(0, 7), bands=st.integers(1, 3))
def test_read_window_equals_the_mirror_extended_image(h, w, tile, halo, extra, bands):
    rng = np.random.default_rng(h * 1000 + w)
    img = rng.integers(0, 1000, (bands, h, w))
    pad = halo + tile + extra  # enough for every read window
    extended = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")
    plan = TilePlan(h, w, tile, halo, extra)
    reads = []
    for t in plan.tiles():
        win = read_mirrored(lambda win: _read(img, win, reads), t.read, h, w)
        expected = extended[:, t.read.row + pad : t.read.row_stop + pad,
                            t.read.col + pad : t.read.col_stop + pad]
        np.testing.assert_array_equal(win, expected)
    assert all(r.row >= 0 and r.row_stop <= h and r.col >= 0 and r.col_stop <= w for r in reads)


def _read(img, win: Window, log: list):
    log.append(win)
    return img[(slice(None), *win.slices)]


def test_mirror_indices_match_numpy_symmetric_when_pad_exceeds_axis():
    a = np.arange(3)
    np.testing.assert_array_equal(
        a[mirror_indices(-10, 13, 3)], np.pad(a, 10, mode="symmetric")
    )


def test_plan_rejects_nonsense():
    with pytest.raises(InputError, match="--tile"):
        TilePlan(10, 10, 0, 2)
    with pytest.raises(InputError, match="--halo"):
        TilePlan(10, 10, 4, -1)


def test_ring_adds_neighbour_tiles_for_blending():
    plan = TilePlan(40, 40, 8, 3, block=2, ring=1)
    block = plan.block_at(1, 1)
    assert len(block.tiles) == 16  # 2x2 own tiles plus the ring, clipped at the image
    assert block.core == Window(16, 16, 16, 16)
