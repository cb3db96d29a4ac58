"""``model=`` of :func:`segpipe.segment`: a path, a bundled name, a URL or a loaded module.

Blocks load their model by path in every process that runs them (the run's
:func:`~segpipe.models.loading.load_model_cached`, verified by its sha256), so a loaded
``torch.nn.Module`` is written once to a file first, with the project's own writer
(a segpipe checkpoint for a built-in network whose card names its architecture, else a
``torch.export`` program with dynamic sizes): a Dask worker in another process loads it like
any model file. The files live in one temporary folder per process, removed at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from segpipe.models.card import ModelCard
from segpipe.models.foundation import InputError
from segpipe.models.location import is_url

__all__ = ["model_source"]

_FOLDER: list[Path] = []  # the process's folder of saved modules, made on first use


def model_source(model: Any, card: ModelCard | None = None, bands: int | None = None) -> str:
    """What the run's ``--model`` would be for ``model``: a file path, a name or a URL.

    A bundled model's name becomes its checkpoint's path; a ``torch.nn.Module`` is saved
    (with ``card``, or none: raw pixels as float32 then, as for any model without a card),
    traced on ``bands`` input channels when neither the card nor the module says how many.
    """
    if isinstance(model, str | Path):
        return _named(str(model), card)
    import torch

    if isinstance(model, torch.nn.Module):
        return str(_saved(model, card, bands))
    raise InputError(
        f"model= {type(model).__name__} is not a model: give a model file path, a bundled "
        "model name (segpipe models lists them), a URL or a torch.nn.Module"
    )


def _named(model: str, card: ModelCard | None) -> str:
    if card is not None:
        raise InputError("card= applies to a torch.nn.Module given as model=; a model file "
                         "carries its own card")
    if is_url(model):
        return model
    if Path(model).exists():  # absolute: Dask workers may run in another folder
        return str(Path(model).resolve())
    from segpipe.models.bundled import find_bundled

    bundled = find_bundled(model)
    return str(bundled.path) if bundled is not None else model


def _saved(module: Any, card: ModelCard | None, bands: int | None) -> Path:
    """A built-in network whose card names it as a segpipe checkpoint, else an exported program.

    The checkpoint rebuilds the same eager module (so the labels are those of the module
    itself); the program is what any other module can be saved as.
    """
    from segpipe.models.saving import export_program, save_checkpoint

    arch = card.architecture if card is not None else None
    if arch is not None:
        path = Path(tempfile.mkstemp(suffix=".pt", dir=_folder())[1])
        save_checkpoint(module, path, architecture=arch["name"], config=arch["config"],
                        card=card)
        return path
    path = Path(tempfile.mkstemp(suffix=".pt2", dir=_folder())[1])
    channels = card.bands if card else getattr(module, "in_channels", None) or bands
    export_program(module, path, card=card, in_channels=channels)
    return path


def _folder() -> Path:
    if not _FOLDER:
        folder = Path(tempfile.mkdtemp(prefix="segpipe-modules-"))
        atexit.register(shutil.rmtree, folder, True)
        _FOLDER.append(folder)
    return _FOLDER[0]
