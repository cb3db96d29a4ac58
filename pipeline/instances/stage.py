"""The instance pass of a run: ``instances.zarr`` in the work directory, canonical uint32 ids.

It runs after the segment stage, on the driver, streaming over the run's blocks in raster
order (memory of one block plus a few integers per object, never the image):

1. *Provisional ids.* Each block's objects get ids ``offset + 1 … offset + n`` (``offset``
   counts the objects of the blocks before it), written into ``instances.zarr``:

   * ``watershed`` (:mod:`.block`): the objects the block owns (anchor in its core), found in
     its core plus a halo of ``max_diameter`` pixels and painted where they lie (into the halo
     too; objects of different blocks are disjoint). Exact for clumps smaller than the halo.
   * ``components`` (:mod:`.relabel`): the 4-connected components of the block's core, numbered
     as the segment stage numbered them for the seam join (``block_components``), whose join is
     run again here over the block markers (its union pairs written under ``instances-seams``).
     Exact for objects of any size.

2. *Canonical ids.* A table maps provisional to canonical ids (consecutive from 1 in raster
   order of each object's first pixel over the whole image; :mod:`.canonical`); the array is
   rewritten through it one block at a time, and each id's first pixel (its anchor) and class
   are gathered on the way for the measurements and the report.

Resume: ``instances.json`` (the settings, counts) is written last, so a pass killed part way
leaves no state and reruns from the start; a pass whose settings are unchanged is not rerun,
one whose settings changed (a kept work directory, ``--keep-workdir``) is, without the model.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from segpipe.models.foundation import InputError
from segpipe.pipeline import storage
from segpipe.pipeline.instances.block import BlockWindow, block_instances
from segpipe.pipeline.instances.canonical import global_ids
from segpipe.pipeline.instances.options import InstanceOptions
from segpipe.pipeline.instances.relabel import BlockFacts, block_facts, table_from_seams
from segpipe.pipeline.instances.request import InstanceMethod
from segpipe.pipeline.io.zarrstore import create_array, open_array
from segpipe.pipeline.objects import BlockObjects, block_components
from segpipe.pipeline.seamjoin import SeamJoin, SeamWriter
from segpipe.pipeline.workdir import pack_array, unpack_array

if TYPE_CHECKING:
    from segpipe.pipeline.io.base import RasterInfo
    from segpipe.pipeline.plan import RunPlan
    from segpipe.pipeline.workdir import WorkDir

__all__ = ["InstanceState", "instance_options", "instance_pixels", "instance_stage",
           "instances_path", "pixel_area", "read_state"]

log = logging.getLogger("segpipe")

FORMAT = 2  # 2: the pass also keeps each id's pixel count (instances-pixels)
_UNSEEN = np.iinfo(np.int64).max


def instances_path(workdir: WorkDir) -> str:
    """The instance id array of a work directory."""
    return storage.join(workdir.path, "instances.zarr")


def _state_path(workdir: WorkDir) -> str:
    return storage.join(workdir.path, "instances.json")


def _facts_path(workdir: WorkDir, what: str) -> str:
    return storage.join(workdir.path, f"instances-{what}")


@dataclass(frozen=True)
class InstanceState:
    """What a finished instance pass recorded: its settings, and objects per class.

    ``clipped``: objects whose clump reached the inner border of a block's read window (larger
    than ``max_diameter``: their separation may differ from the whole image's).
    """

    key: dict[str, Any]
    count: int
    classes: dict[int, int]
    clipped: int
    seconds: float

    def to_json(self) -> str:
        """JSON text (class keys as strings)."""
        return json.dumps({**asdict(self), "classes": {str(k): v for k, v in
                                                       self.classes.items()}})

    @classmethod
    def from_json(cls, text: str) -> InstanceState:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        d["classes"] = {int(k): int(v) for k, v in d["classes"].items()}
        return cls(**d)


def read_state(workdir: WorkDir) -> InstanceState | None:
    """The state of a finished instance pass in ``workdir``; None when there is none."""
    try:
        return InstanceState.from_json(storage.read_text(_state_path(workdir)))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: the pass runs again


def anchors_and_classes(workdir: WorkDir) -> tuple[np.ndarray, np.ndarray]:
    """Per canonical id (index 0 unused): its first pixel's linear index, and its class."""
    anchors = unpack_array(storage.read_text(_facts_path(workdir, "anchors")))
    classes = unpack_array(storage.read_text(_facts_path(workdir, "classes")))
    return anchors, classes


def instance_pixels(workdir: WorkDir) -> np.ndarray:
    """Per canonical id (index 0 unused): its pixels, counted by the pass as it wrote the ids."""
    return unpack_array(storage.read_text(_facts_path(workdir, "pixels")))


# ------------------------------------------------------------------------ the settings


def pixel_area(info: RasterInfo) -> float:
    """The area of one label pixel in the output's area unit (that of ``--vectors-min-area``).

    For a geographic CRS, the geodesic area of the image's central pixel (taken as constant).
    """
    from segpipe.pipeline.vectors import AreaKind, frame_of

    frame = frame_of(info)
    if frame.kind is not AreaKind.GEODESIC or frame.geod is None:
        return frame.pixel_area
    import shapely

    a, b, d, e, x0, y0 = frame.matrix
    r, c = info.height // 2, info.width // 2
    corners = [(c + dc, r + dr) for dc, dr in ((0, 0), (1, 0), (1, 1), (0, 1))]
    ring = [(a * x + b * y + x0, d * x + e * y + y0) for x, y in corners]
    polygon = shapely.orient_polygons(shapely.Polygon(ring), exterior_cw=False)
    return abs(frame.geod.geometry_area_perimeter(polygon)[0])


def _class_values(plan: RunPlan) -> tuple[int, ...]:
    """``--instance-classes`` as label values (names looked up in the card), or the default."""
    names = [c.name for c in plan.card.classes]
    asked = plan.options.instances.instance_classes
    if asked is None:
        return tuple(range(1, plan.num_classes)) or (0,)
    values = []
    for item in asked:
        value = names.index(item) if isinstance(item, str) and item in names else item
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if not isinstance(value, int) or not 0 <= value < plan.num_classes:
            raise InputError(
                f"--instance-classes {item!r} is not a class of the model: give label values "
                f"0…{plan.num_classes - 1} or names ({', '.join(names)})"
            )
        values.append(value)
    return tuple(values)


def instance_options(plan: RunPlan) -> InstanceOptions:
    """The plan's instance settings in pixels (``--instance-min-area`` through the pixel area)."""
    request = plan.options.instances
    area = pixel_area(plan.info)
    min_pixels = math.ceil(request.instance_min_area / area - 1e-9) if area > 0 else 0
    return InstanceOptions(
        classes=_class_values(plan), min_distance=request.instance_min_distance,
        min_area_pixels=max(0, min_pixels), max_diameter=request.max_diameter,
        separate=request.instance_method is InstanceMethod.WATERSHED,
    )


def _key(plan: RunPlan, options: InstanceOptions) -> dict[str, Any]:
    return {"format": FORMAT, **asdict(options), "classes": list(options.classes),
            "probabilities": bool(options.separate and plan.probabilities_path)}


# ---------------------------------------------------------------------------- the pass


def instance_stage(plan: RunPlan) -> InstanceState:
    """Write ``instances.zarr`` (unless a finished pass with the same settings is there)."""
    options = instance_options(plan)
    key = _key(plan, options)
    state = read_state(plan.workdir)
    if state is not None and state.key == key and storage.exists(instances_path(plan.workdir)):
        return state
    start = time.perf_counter()
    storage.remove(_state_path(plan.workdir))
    t = plan.tiles
    out = create_array(instances_path(plan.workdir), (t.height, t.width), (t.tile, t.tile),
                       "uint32", fill_value=0)
    if options.separate:
        table, clipped = _separated(plan, options, out)
    else:
        table, clipped = _components(plan, options, out), 0
    anchors, classes, pixels = _canonical(plan, out, table)
    for what, facts in (("anchors", anchors), ("classes", classes), ("pixels", pixels)):
        storage.write_text(_facts_path(plan.workdir, what), pack_array(facts))
    per_class = np.bincount(classes[1:], minlength=plan.num_classes)
    state = InstanceState(
        key=key, count=len(anchors) - 1, clipped=clipped,
        classes={k: int(per_class[k]) for k in options.classes},
        seconds=time.perf_counter() - start,
    )
    if clipped:
        log.warning("%s: %d instances belong to clumps larger than --instance-max-diameter "
                    "%d px; their separation may differ from the whole image's", plan.name,
                    clipped, options.max_diameter)
    storage.write_text(_state_path(plan.workdir), state.to_json())  # last: the pass is done
    return state


def _separated(plan: RunPlan, options: InstanceOptions, out: Any) -> tuple[np.ndarray, int]:
    """Pass 1 with separation: each block's owned objects painted with provisional ids."""
    labels = open_array(plan.workdir.labels, mode="r")
    probabilities = (open_array(plan.probabilities_path, mode="r")
                     if plan.probabilities_path else None)
    shape = (plan.tiles.height, plan.tiles.width)
    anchors: list[np.ndarray] = []
    offset = clipped = 0
    for index in plan.tiles.block_indices():
        window = BlockWindow.around(plan.tiles.block_core(*index), options.max_diameter, shape)
        read = window.read.slices
        surface = None if probabilities is None else _surface(probabilities, read)
        found = block_instances(np.asarray(labels[read]), window, options, surface)
        _check_ids(offset + found.count)
        if found.count:
            region = np.asarray(out[read])
            own = found.ids > 0
            region[own] = found.ids[own] + np.uint32(offset)
            out[read] = region
        anchors.append(found.anchors)
        offset += found.count
        clipped += int(found.clipped.sum())
    table = np.zeros(offset + 1, np.uint32)
    if offset:
        table[1:] = np.concatenate(global_ids(anchors))
    return table, clipped


def _surface(probabilities: Any, read: tuple[slice, slice]) -> np.ndarray:
    """The model's class probabilities over a window, indexed by class.

    A one-channel model's one probability is that of class 1.
    """
    p = np.asarray(probabilities[(slice(None), *read)], np.float32)
    return np.concatenate([1 - p, p]) if p.shape[0] == 1 else p


def _components(plan: RunPlan, options: InstanceOptions, out: Any) -> np.ndarray:
    """Pass 1 without separation: every block's components, provisional ids from the seam join.

    The join runs again over the block markers (as the report's does) and writes its union
    pairs and offsets under ``instances-seams``; a provisional id is ``offset + local id``.
    """
    folder = _facts_path(plan.workdir, "seams")
    writer = SeamWriter(folder)
    join = SeamJoin(sink=writer)
    for record in plan.workdir.finished():
        join.add(BlockObjects.of_record(record))
    writer.finish(join)
    labels = open_array(plan.workdir.labels, mode="r")
    facts: list[BlockFacts] = []
    for index in plan.tiles.block_indices():
        core = plan.tiles.block_core(*index)
        counts, ids = block_components(np.asarray(labels[core.slices]), plan.nodata)
        facts.append(block_facts(index, ids, counts, (core.row, core.col), plan.tiles.width))
        offset = join.offsets[index]
        _check_ids(offset + sum(counts.values()))
        out[core.slices] = np.where(ids > 0, ids.astype(np.int64) + offset, 0).astype(np.uint32)
    _, table = table_from_seams(folder, facts, classes=options.classes,
                                min_area_pixels=options.min_area_pixels)
    return table


def _check_ids(count: int) -> None:
    if count >= 2**32:
        raise InputError(f"{count} objects: more than uint32 instance ids can number")


def _canonical(
    plan: RunPlan, out: Any, table: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 2: the array through ``table``, a block at a time.

    Returns, per canonical id (index 0 unused), its pixels, its anchor (the linear index of its
    first pixel:
    the smallest linear index of its pixels, the minimum over the blocks of each block's first,
    since a block's raster order is the image's on its rectangle) and its class (an object has
    one class: that of any of its pixels). The pixels are counted by the same ``np.unique``
    (for the report's histogram of areas: no second read of the array).

    By block, not by strips of full rows: a strip costs its pixels several times over in
    ``np.unique``'s sort, so strips grew with the image's width (17 MiB at 3072 px wide for 4 at
    768 in the memory test, tests/flows/test_memory.py); a block's cost is the same on any image.
    """
    count = int(table.max(initial=0))
    anchors = np.full(count + 1, _UNSEEN, np.int64)
    classes = np.zeros(count + 1, np.int64)
    pixels = np.zeros(count + 1, np.int64)
    labels = open_array(plan.workdir.labels, mode="r")
    width = plan.tiles.width
    for index in plan.tiles.block_indices():
        core = plan.tiles.block_core(*index)
        ids = table[np.asarray(out[core.slices])]
        out[core.slices] = ids
        values, first, n = np.unique(ids.ravel(), return_index=True, return_counts=True)
        keep = values > 0
        values, first = values[keep], first[keep]
        pixels[values] += n[keep]  # distinct values: one update of each id
        rows, cols = np.divmod(first, core.width)
        np.minimum.at(anchors, values, (rows + core.row) * width + cols + core.col)
        classes[values] = np.asarray(labels[core.slices]).ravel()[first]
    anchors[0] = -1
    return anchors, classes, pixels
