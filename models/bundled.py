"""The bundled models: trained checkpoints installed with segpipe in ``segpipe/models/zoo/``.

Each bundled model is one file, ``zoo/<name>.pt``: a segpipe checkpoint
(:func:`segpipe.models.saving.save_checkpoint`) whose embedded card (or a sidecar
``zoo/<name>.json``) describes what it takes: ``bands`` and ``band_names``, ``domain``
(``geo`` or ``microscopy``), ``pixel_size_range`` with ``pixel_size_unit``, classes, licence,
training data and metrics. Adding such a file is all it takes to register a model; segpipe
finds the folder through :mod:`importlib.resources`, so it works wherever segpipe is installed.

:data:`ZOO` overrides the folder (for tests, or an organisation's own set of models); a
function's ``zoo`` argument overrides both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .card import ModelCard
from .foundation import ModelError

__all__ = ["ZOO", "BundledModel", "bundled_models", "find_bundled", "zoo_dir"]

log = logging.getLogger("segpipe")

#: The folder of bundled models; None means the ``zoo`` folder installed with segpipe.
ZOO: Path | None = None

# (path, size, mtime_ns) → card: a run reads each bundled checkpoint's card once per process.
_CARDS: dict[tuple[str, int, int], ModelCard | None] = {}


@dataclass(frozen=True)
class BundledModel:
    """One bundled model: its name (the file's stem), its checkpoint and its card."""

    name: str
    path: Path
    card: ModelCard

    def summary(self) -> str:
        """One line: name, bands, domain, classes and the card's description."""
        card = self.card
        bands = f"{card.bands} band{'s' if card.bands > 1 else ''}"
        if card.band_names:
            bands += f" ({','.join(card.band_names)})"
        classes = ",".join(c.name for c in card.classes)
        domain = card.domain.value if card.domain else "any"
        line = f"{self.name}: {bands}, {domain}, classes {classes}"
        return f"{line}; {card.description}" if card.description else line


def zoo_dir(zoo: Path | str | None = None) -> Path:
    """The folder of bundled models: ``zoo``, else :data:`ZOO`, else the installed one."""
    if zoo is not None:
        return Path(zoo)
    if ZOO is not None:
        return Path(ZOO)
    return Path(str(resources.files("segpipe.models") / "zoo"))


def bundled_models(zoo: Path | str | None = None) -> list[BundledModel]:
    """Every bundled model with a card, by name; a checkpoint without a card is skipped."""
    folder = zoo_dir(zoo)
    if not folder.is_dir():
        return []
    models = []
    for path in sorted(folder.glob("*.pt")):
        card = _card(path)
        if card is None:
            log.warning("bundled model %s has no card: skipped (add one to the checkpoint)", path)
            continue
        models.append(BundledModel(path.stem, path, card))
    return models


def find_bundled(name: str, zoo: Path | str | None = None) -> BundledModel | None:
    """The bundled model called ``name`` (case-insensitive), or None."""
    return next(
        (m for m in bundled_models(zoo) if m.name.casefold() == name.casefold()), None
    )


def _card(path: Path) -> ModelCard | None:
    from .formats import checkpoint_card

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CARDS:
        try:
            _CARDS[key] = checkpoint_card(path)
        except ModelError as exc:
            raise ModelError(f"bundled model {path.name}: {exc}") from None
    return _CARDS[key]
