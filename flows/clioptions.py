"""Command-line options built from the option dataclasses, so no default is written twice.

Every field of :class:`~segpipe.pipeline.options.SourceOptions`, ``TilingOptions``,
``InferenceOptions``, ``ExportOptions``, :class:`~segpipe.pipeline.instances.request.
InstanceRequest` and :class:`~segpipe.flows.execution.Execution` becomes
``--field-name`` with the field's default and the help text in its metadata. Closed choices
(StrEnums) are checked by the dataclasses, which name the choices and suggest the nearest one.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import click

from segpipe.flows.execution import Execution
from segpipe.pipeline.instances.request import InstanceRequest
from segpipe.pipeline.options import (
    ExportOptions,
    InferenceOptions,
    SourceOptions,
    TilingOptions,
)

__all__ = ["GROUPS", "execution_from", "groups_from", "option_decorator"]

#: The option groups of ``segpipe run`` and ``segpipe serve``, by RunOptions field name.
GROUPS: dict[str, type] = {
    "source": SourceOptions,
    "tiling": TilingOptions,
    "inference": InferenceOptions,
    "export": ExportOptions,
    "instances": InstanceRequest,
}


def _bands(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--bands 1,2,3`` or ``--bands red,green,blue`` (numbers and names may mix)."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return tuple(_band_item(v) for v in items)


def _band_item(text: str) -> int | str:
    """A band number (``3``, also ``-1`` so that the options refuse it by name) or a name."""
    try:
        return int(text)
    except ValueError:
        return text


def _base(annotation: Any) -> Any:
    """``X`` from ``X | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def _option(f: dataclasses.Field, annotation: Any) -> Callable[[Any], Any]:
    name = "--" + f.name.replace("_", "-")
    base = _base(annotation)
    kw: dict[str, Any] = {"help": f.metadata.get("help"), "hidden": f.metadata.get("hidden", False)}
    default = f.default
    if base is bool:
        return click.option(name, is_flag=True, default=default, **kw)
    if typing.get_origin(base) is tuple:
        return click.option(name, default=None, callback=_bands, **kw)
    if isinstance(base, type) and issubclass(base, StrEnum):
        kw["metavar"] = "[" + "|".join(str(m) for m in base) + "]"
        base = str
    show = default is not None
    value = str(default) if isinstance(default, StrEnum) else default
    return click.option(name, type=base, default=value, show_default=show, **kw)


def option_decorator(*classes: type) -> Callable[[Any], Any]:
    """A decorator adding one click option per field of ``classes``."""
    options = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        options += [_option(f, hints[f.name]) for f in dataclasses.fields(cls)]

    def decorate(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def groups_from(kw: dict[str, Any]) -> dict[str, Any]:
    """The option groups built from click's keyword arguments (validated on construction)."""
    return {
        group: cls(**{f.name: kw[f.name] for f in dataclasses.fields(cls)})
        for group, cls in GROUPS.items()
    }


def execution_from(kw: dict[str, Any], **override: Any) -> Execution:
    """The :class:`Execution` from click's keyword arguments."""
    values = {f.name: kw[f.name] for f in dataclasses.fields(Execution)}
    return Execution(**{**values, **override})


#: ``@segment_options``: every option of the groups and of the execution.
segment_options = option_decorator(*GROUPS.values(), Execution)
