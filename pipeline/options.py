"""What a run is asked for: small frozen option groups and the closed choices as StrEnums.

Each group is validated on construction; a bad value raises :class:`InputError` naming the
option as the command line spells it, the value, the constraint and the fix. The command line
builds its options from these dataclasses (``segpipe.flows.clioptions``): every default is
written here once, with its help text in the field's metadata.

This module imports neither torch nor any I/O library, so the command line can import it cheaply.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from segpipe.models.card import NormMethod
from segpipe.models.foundation import InputError, Precision
from segpipe.pipeline.instances.request import InstanceRequest
from segpipe.pipeline.io.readeroptions import ReaderOptions, Resampling

__all__ = [
    "DEFAULT_TILE",
    "Backend",
    "Blend",
    "ExportOptions",
    "InferenceOptions",
    "NgffVersion",
    "NormMethod",
    "OutputFormat",
    "OverviewResampling",
    "Precision",
    "ProbabilityDtype",
    "Resampling",
    "RunOptions",
    "SourceOptions",
    "TilingOptions",
    "choice",
]

E = TypeVar("E", bound=StrEnum)

#: The tile side when ``--tile`` is not given (rounded to the model's stride).
DEFAULT_TILE = 512


class Blend(StrEnum):
    """How overlapping tile outputs are combined: ``crop`` (exact) or ``gaussian``."""

    CROP = "crop"
    GAUSSIAN = "gaussian"


class Backend(StrEnum):
    """How the forward pass runs: ``eager`` (exact), or opt-in ``compile`` / ``onnxruntime``."""

    EAGER = "eager"
    COMPILE = "compile"
    ONNXRUNTIME = "onnxruntime"


class OverviewResampling(StrEnum):
    """How pyramid levels of GeoTIFF outputs are made (labels are never averaged)."""

    NEAREST = "nearest"
    MODE = "mode"


class ProbabilityDtype(StrEnum):
    """Probabilities as float (float32 in TIFFs, float16 in Zarr) or uint8 (p × 255)."""

    FLOAT = "float"
    UINT8 = "uint8"


class NgffVersion(StrEnum):
    """The OME-Zarr versions segpipe writes."""

    V04 = "0.4"
    V05 = "0.5"


class OutputFormat(StrEnum):
    """The formats segpipe writes; chosen from the output path's extension."""

    GEOTIFF = "geotiff"
    OME_TIFF = "ome-tiff"
    OME_ZARR = "ome-zarr"

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> OutputFormat:
        """``.ome.tif``/``.ome.tiff`` → OME-TIFF, ``.ome.zarr`` → OME-Zarr, ``.tif``/``.tiff``."""
        name = Path(path).name.lower().rstrip("/")
        if name.endswith((".ome.tif", ".ome.tiff", ".ome.tf2", ".ome.tf8", ".ome.btf")):
            return cls.OME_TIFF
        if name.endswith(".ome.zarr"):
            return cls.OME_ZARR
        if name.endswith((".tif", ".tiff")):
            return cls.GEOTIFF
        raise InputError(
            f"--output {path}: unknown extension; use .tif/.tiff (GeoTIFF), .ome.tif/.ome.tiff "
            "(OME-TIFF) or .ome.zarr (OME-Zarr)"
        )


def choice(enum: type[E], value: object, option: str) -> E:
    """``value`` as a member of ``enum``; else :class:`InputError` listing the choices."""
    if isinstance(value, enum):
        return value
    try:
        return enum(str(value).strip().lower())
    except ValueError:
        names = [str(m) for m in enum]
        close = difflib.get_close_matches(str(value), names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(
            f"{option} {value!r} is not one of {', '.join(names)}{hint}"
        ) from None


def _positive(option: str, value: int | float | None, example: str, *, zero: bool = False) -> None:
    if value is None:
        return
    ok = value >= 0 if zero else value > 0
    if isinstance(value, bool) or not ok:
        rule = "0 or more" if zero else "a positive number"
        raise InputError(
            f"{option} {value} is invalid: it must be {rule} (e.g. {option} {example})"
        )


def opt(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field with its command-line help (and click settings) in its metadata."""
    return field(default=default, metadata={"help": help, **cli})


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _band_list(bands: Any) -> tuple[int | str, ...]:
    """``--bands`` as a tuple of 1-based numbers and names (names stripped)."""
    if isinstance(bands, str | int):
        bands = (bands,)
    out: list[int | str] = []
    for b in bands:
        if isinstance(b, str) and b.strip():
            out.append(b.strip())
        elif isinstance(b, int) and not isinstance(b, bool) and b >= 1:
            out.append(b)
        else:
            raise InputError(
                f"--bands {b!r} is invalid: give 1-based band numbers or band names, "
                "e.g. --bands 1,2,3 or --bands red,green,blue"
            )
    if not out:
        raise InputError(
            "--bands selects no band: give 1-based numbers or names, e.g. --bands 1,2,3"
        )
    return tuple(out)


@dataclass(frozen=True)
class SourceOptions:
    """Which pixels to read: bands, pyramid level, and how a STAC item's bands are stacked."""

    bands: tuple[int | str, ...] | None = opt(
        None,
        "Bands to read: 1-based numbers or band/channel names, e.g. 1,2,3, red,green,blue or "
        "DAPI.",
    )
    level: int | None = opt(
        None, "Pyramid level to read (default: 0, or the one nearest the card's pixel size)."
    )
    pixel_size: float | None = opt(
        None, "Read the pyramid level closest to this pixel size (input units)."
    )
    nodata: float | None = opt(
        None, "The input's nodata value when its metadata does not declare it (e.g. 0 for the "
        "fill around a Landsat scene); overrides a declared one."
    )
    sensor: str | None = opt(
        None, "The sensor family of the input (e.g. landsat7, landsat8, sentinel2), for a model "
        "whose card scales each family's values differently (segpipe models NAME lists them); "
        "Landsat and Sentinel-2 product file names say it themselves."
    )
    mask: str | None = opt(
        None, "Segment only inside a region; outside is nodata and costs nothing: a mask raster "
        "(non-zero = inside), polygons (a vector file, e.g. .gpkg/.geojson) or 'tissue' (found "
        "on a low-resolution level of a slide)."
    )
    resampling: Resampling = opt(
        Resampling.NEAREST, "How a STAC item's coarser bands are brought onto the grid of the "
        "finest band --bands names (STAC inputs only; other inputs are read as they are)."
    )

    def __post_init__(self) -> None:
        if self.bands is not None:
            object.__setattr__(self, "bands", _band_list(self.bands))
        object.__setattr__(
            self, "resampling", choice(Resampling, self.resampling, "--resampling")
        )
        _positive("--level", self.level, "1", zero=True)
        _positive("--pixel-size", self.pixel_size, "0.5")
        if self.level is not None and self.pixel_size is not None:
            raise InputError("give --level or --pixel-size, not both")

    @property
    def reader(self) -> ReaderOptions:
        """What every open of the input is given (a STAC item: the stacked bands, resampling)."""
        return ReaderOptions.of(self.bands, self.resampling)


@dataclass(frozen=True)
class TilingOptions:
    """How the image is cut: tile, halo, blending and the block (one task) size."""

    tile: int | None = opt(
        None,
        "Tile size in pixels, a multiple of the model's stride (default: 512, or what fits a "
        "model with a fixed input size).",
    )
    halo: int | None = opt(None, "Halo in pixels (default: from the model).")
    blend: Blend = opt(Blend.CROP, "How overlapping tiles are combined.")
    block_pixels: int = opt(
        1024, "Side of a block (one task) in pixels, rounded to whole tiles (small enough that "
        "the last blocks of a run keep every worker busy).", hidden=True
    )

    def __post_init__(self) -> None:
        _positive("--tile", self.tile, "512")
        _positive("--halo", self.halo, "32", zero=True)
        _positive("--block-pixels", self.block_pixels, "1024")
        object.__setattr__(self, "blend", choice(Blend, self.blend, "--blend"))


@dataclass(frozen=True)
class InferenceOptions:
    """Which model and how to run it."""

    model: str | None = opt(
        None,
        "Model file (default: the bundled model that fits the input; see segpipe models).",
    )
    model_sha256: str | None = opt(
        None, "Pin --model: refuse it unless its bytes have this sha256 (64 hex digits), "
        "checked before anything in the file is loaded."
    )
    random_weights: bool = opt(
        False,
        "Allow an architecture name as --model (e.g. unet): random weights, for trying the "
        "pipeline only.",
    )
    normalize: NormMethod | None = opt(None, "Override the model card's normalization.")
    precision: Precision = opt(Precision.FP32, "Forward-pass arithmetic (bf16: autocast).")
    backend: Backend = opt(
        Backend.EAGER, "How the model runs: eager (exact), or compile (torch.compile) and "
        "onnxruntime (exported once per run), which may change a few labels."
    )
    probabilities: bool = opt(False, "Also write per-class probabilities.")
    batch_size: int | None = opt(
        None, "Tiles per forward pass (default: 4 on the CPU; on a GPU as many as fit in its "
        "free memory, halved on out-of-memory)."
    )
    device: str = opt("auto", "auto, cpu, cuda or cuda:N.")

    def __post_init__(self) -> None:
        if self.normalize is not None:
            object.__setattr__(
                self, "normalize", choice(NormMethod, self.normalize, "--normalize")
            )
        object.__setattr__(self, "precision", choice(Precision, self.precision, "--precision"))
        object.__setattr__(self, "backend", choice(Backend, self.backend, "--backend"))
        if self.model_sha256 is not None:
            self._check_pin()
        if self.random_weights and not self.model:
            raise InputError(
                "--random-weights needs an architecture name in --model, e.g. --model unet "
                "--random-weights (segpipe models lists them)"
            )
        _positive("--batch-size", self.batch_size, "4")
        device = str(self.device).strip().lower()
        if not _DEVICE.match(device):
            raise InputError(
                f"--device {self.device!r} is not a device: use auto, cpu, cuda or cuda:N"
            )
        object.__setattr__(self, "device", device)

    def _check_pin(self) -> None:
        """``--model-sha256``: a sha256, for a model file or URL given with ``--model``."""
        from segpipe.models.pinning import parse_sha256

        object.__setattr__(self, "model_sha256", parse_sha256(str(self.model_sha256)))
        if not self.model or self.random_weights:
            raise InputError(
                "--model-sha256 pins the file of --model; give --model PATH or URL (a bundled "
                "model or an architecture with --random-weights has no file to pin)"
            )


@dataclass(frozen=True)
class ExportOptions:
    """How the output files are written from the label array (never changes the labels)."""

    overview_resampling: OverviewResampling = opt(
        OverviewResampling.NEAREST,
        "How GeoTIFF pyramid levels are made (labels are never averaged).",
    )
    probabilities_dtype: ProbabilityDtype = opt(
        ProbabilityDtype.FLOAT,
        "float (float32 in TIFFs, float16 in Zarr) or uint8 (p × 255).",
    )
    ngff_version: NgffVersion = opt(NgffVersion.V04, "OME-Zarr output version.")
    vectors: str | None = opt(
        None,
        "Also write the class polygons, seamless across tiles, to this .gpkg (in the input's "
        "CRS, or level-0 pixel coordinates without one) or .geojson (QuPath annotations in "
        "level-0 pixels; WGS 84 longitude/latitude for georeferenced inputs).",
    )
    vectors_min_area: float = opt(
        0.0,
        "Leave out polygons smaller than this, in the unit of their area: m² for a projected "
        "or geographic (geodesic) CRS, µm² for microscopy with a pixel size, else level-0 "
        "pixels.",
    )

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "overview_resampling",
            choice(OverviewResampling, self.overview_resampling, "--overview-resampling"),
        )
        object.__setattr__(
            self, "probabilities_dtype",
            choice(ProbabilityDtype, self.probabilities_dtype, "--probabilities-dtype"),
        )
        object.__setattr__(
            self, "ngff_version", choice(NgffVersion, self.ngff_version, "--ngff-version")
        )
        _check_vectors(self.vectors, self.vectors_min_area)


#: The extensions ``--vectors`` takes.
VECTOR_EXTENSIONS = (".gpkg", ".geojson")


def _check_vectors(vectors: str | None, min_area: float) -> None:
    """``--vectors`` names a .gpkg or .geojson file; ``--vectors-min-area`` needs it."""
    _positive("--vectors-min-area", min_area, "100", zero=True)
    if vectors is None:
        if min_area:
            raise InputError(
                "--vectors-min-area applies to the polygons of --vectors: add --vectors "
                "OUT.gpkg or drop --vectors-min-area"
            )
        return
    if not str(vectors).lower().endswith(VECTOR_EXTENSIONS):
        raise InputError(
            f"--vectors {vectors}: unknown extension; use .gpkg (GeoPackage) or .geojson"
        )


@dataclass(frozen=True)
class RunOptions:
    """One input to one output, with the option groups and the handling switches."""

    input: str
    output: str
    source: SourceOptions = field(default_factory=SourceOptions)
    tiling: TilingOptions = field(default_factory=TilingOptions)
    inference: InferenceOptions = field(default_factory=InferenceOptions)
    export: ExportOptions = field(default_factory=ExportOptions)
    instances: InstanceRequest = field(default_factory=InstanceRequest)
    workdir: str | None = None
    overwrite: bool = False
    resume: bool = False
    keep_workdir: bool = False

    def __post_init__(self) -> None:
        if self.output:
            OutputFormat.from_path(self.output)

    @property
    def output_format(self) -> OutputFormat:
        """The format the output extension asks for."""
        return OutputFormat.from_path(self.output)

    def for_file(self, input: str, output: str) -> RunOptions:
        """These settings for another input and output (a batch shares one set of settings)."""
        return replace(self, input=input, output=output)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for Prefect parameters and reports)."""
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunOptions:
        """Inverse of :meth:`to_dict`."""
        kw = {k: (_GROUPS[k](**v) if k in _GROUPS and isinstance(v, dict) else v)
              for k, v in d.items()}
        return cls(**kw)

    @classmethod
    def of(cls, input: str, output: str, **options: Any) -> RunOptions:
        """Options by their flat names, as on the command line (``tile=256, device="cpu"``).

        Each name goes to its group; names of no group are the handling switches
        (``workdir``, ``overwrite``, ``resume``, ``keep_workdir``).
        """
        groups: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
        rest: dict[str, Any] = {}
        for key, value in options.items():
            owner = next((g for g, c in _GROUPS.items() if key in _field_names(c)), None)
            (groups[owner] if owner else rest)[key] = value
        return cls(input, output, **{g: _GROUPS[g](**kw) for g, kw in groups.items()}, **rest)


_GROUPS: dict[str, type] = {
    "source": SourceOptions, "tiling": TilingOptions, "inference": InferenceOptions,
    "export": ExportOptions, "instances": InstanceRequest,
}


def _field_names(cls: type) -> set[str]:
    from dataclasses import fields

    return {f.name for f in fields(cls)}
