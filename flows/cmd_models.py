"""``segpipe models [NAME]``: the bundled models and the architectures, or one of them.

Without NAME: one line per bundled model (name, bands, domain, classes, description), then the
architecture names. With NAME: a bundled model's card as JSON, or an architecture's default
configuration as JSON; an unknown NAME raises :class:`InputError` with the nearest names.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from segpipe.models.foundation import InputError

__all__ = ["describe_model", "models_listing"]


def models_listing(zoo: Path | None = None) -> str:
    """The text of ``segpipe models``."""
    from segpipe.models.bundled import bundled_models
    from segpipe.models.registry import list_models

    bundled = bundled_models(zoo)
    lines = ["Bundled models (segpipe run chooses one that fits the input when --model is not "
             "given):"]
    lines += [f"  {m.summary()}" for m in bundled] or ["  (none installed)"]
    lines += ["", "Architectures (train one with segpipe train; --model NAME --random-weights "
                  "runs one with random weights):"]
    lines += [f"  {name}" for name in list_models()]
    return "\n".join(lines)


def describe_model(name: str, zoo: Path | None = None) -> str:
    """A bundled model's card, or an architecture's default configuration, as JSON."""
    from segpipe.models.bundled import bundled_models
    from segpipe.models.registry import DEFAULTS

    bundled = bundled_models(zoo)
    for model in bundled:
        if model.name.casefold() == name.casefold():
            return model.card.to_json()
    if name in DEFAULTS:
        return json.dumps({"architecture": name, "config": dict(DEFAULTS[name])}, indent=2)
    known = [m.name for m in bundled] + list(DEFAULTS)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise InputError(
        f"segpipe models {name}: no bundled model or architecture of that name; {hint}"
        f"known: {', '.join(known)}"
    )
