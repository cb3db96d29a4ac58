"""The classes a model is trained for: names and colours, from ``--classes`` or the labels.

``--classes water:#0000ff,forest:#008000`` names classes 0, 1, ... in order (a colour may be
left out: ``water,forest``); without it, a label raster's ``CLASS_i`` tags (as segpipe writes
them) and colour table name and colour its classes, and anything missing is ``class_i`` in the
default palette.
"""

from __future__ import annotations

import contextlib

from segpipe.models.card import ClassInfo, default_palette
from segpipe.models.foundation import InputError, ModelError

__all__ = ["parse_classes", "raster_classes", "resolve_classes"]


def parse_classes(text: str | None) -> tuple[ClassInfo, ...] | None:
    """``name:#rrggbb,...`` (colours optional) as classes; None when ``text`` is empty."""
    if text is None or not text.strip():
        return None
    items = [p.strip() for p in text.split(",")]
    palette = default_palette(len(items))
    classes = []
    for i, item in enumerate(items):
        name, _, color = item.partition(":")
        try:
            classes.append(ClassInfo(name.strip(), color.strip() or palette[i]))
        except ModelError:
            raise InputError(
                f"--classes {item!r} is invalid: give NAME or NAME:#rrggbb, e.g. "
                "--classes water:#0000ff,forest:#008000"
            ) from None
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise InputError(f"--classes {text!r} names a class twice; class names must be unique")
    return tuple(classes)


def raster_classes(path: str, count: int) -> tuple[ClassInfo, ...]:
    """Classes 0..count−1 named by a raster's ``CLASS_i`` tags, coloured by its colour table."""
    import rasterio

    palette = default_palette(count)
    tags: dict[str, str] = {}
    colormap: dict[int, tuple[int, ...]] = {}
    try:
        with rasterio.open(path) as ds:
            tags = ds.tags(1)
            with contextlib.suppress(ValueError):  # no colour table
                colormap = ds.colormap(1)
    except rasterio.errors.RasterioIOError:
        pass
    return tuple(
        ClassInfo(tags.get(f"CLASS_{i}") or f"class_{i}",
                  tuple(colormap[i][:3]) if i in colormap else palette[i])
        for i in range(count)
    )


def resolve_classes(
    given: tuple[ClassInfo, ...] | None, names: list[str] | None, label_raster: str | None,
    count: int,
) -> tuple[ClassInfo, ...]:
    """The classes for ``count`` label values: ``--classes``, vector names, raster, defaults."""
    if given is not None:
        if count > len(given):
            raise InputError(f"the labels hold class {count - 1} but --classes names only "
                             f"{len(given)} classes (0..{len(given) - 1}); name every class")
        return given
    if names is not None:
        palette = default_palette(len(names))
        return tuple(ClassInfo(n, palette[i]) for i, n in enumerate(names))
    if label_raster is not None:
        return raster_classes(label_raster, count)
    palette = default_palette(count)
    return tuple(ClassInfo(f"class_{i}", palette[i]) for i in range(count))
