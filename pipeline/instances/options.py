"""What the instance pass is asked for: which classes, how to separate, what to drop, the halo."""

from __future__ import annotations

from dataclasses import dataclass

from segpipe.models.foundation import InputError

__all__ = ["InstanceOptions"]


@dataclass(frozen=True)
class InstanceOptions:
    """Instance settings (pixels throughout; the CLI converts ``--instance-min-area`` units).

    ``classes``: label values whose 4-connected components are instances. ``separate``: split
    touching objects by a watershed of each class's distance transform seeded by maxima at least
    ``min_distance`` pixels apart. ``min_area_pixels``: smaller instances are dropped (after
    separation). ``max_diameter``: the halo read around each block; a tiled run with separation
    equals the whole image computed in one piece when every clump of touching objects (each
    4-connected component of a class before separation) fits in ``max_diameter`` ×
    ``max_diameter`` pixels.
    """

    classes: tuple[int, ...]
    min_distance: int = 5
    min_area_pixels: int = 0
    max_diameter: int = 64
    separate: bool = True

    def __post_init__(self) -> None:
        if not self.classes:
            raise InputError("instance classes: give at least one class label value")
        if len(set(self.classes)) != len(self.classes):
            raise InputError(f"instance classes {self.classes}: a class is named twice")
        if self.min_distance < 1:
            raise InputError(f"instance min distance {self.min_distance}: must be ≥ 1 pixel")
        if self.min_area_pixels < 0:
            raise InputError(f"instance min area {self.min_area_pixels}: must be ≥ 0 pixels")
        if self.max_diameter < 1:
            raise InputError(f"instance max diameter {self.max_diameter}: must be ≥ 1 pixel")
