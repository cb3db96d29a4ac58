"""``--measurements-format parquet``: the measurements as a Parquet file, one row group a block row.

The same rows and columns as the CSV (:func:`~segpipe.pipeline.instances.measure.columns`),
typed: ``id``, ``class``, ``area_pixels`` and the bounding box as int64, the rest float64. A
value that is not finite (an eccentricity regionprops could not compute) is null, as it is an
empty cell in the CSV and null in the detections. Rows arrive one block row at a time, sorted
by id (:mod:`segpipe.pipeline.instances.tables`); each becomes one row group, so memory holds
one block row, never the table. The file appears complete under its name or not at all
(:func:`segpipe.pipeline.storage.publish`).

pyarrow is optional (``pip install 'segpipe[parquet]'``); the flag checks it is there before any
block runs (:class:`~segpipe.pipeline.instances.request.InstanceRequest`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from segpipe.pipeline import storage

__all__ = ["INTEGER_COLUMNS", "write_measurements_parquet"]

#: Measurement columns holding whole numbers (int64 in Parquet, integers in the CSV).
INTEGER_COLUMNS = frozenset({"id", "class", "area_pixels", "bbox_row_min", "bbox_col_min",
                             "bbox_row_max", "bbox_col_max"})


def write_measurements_parquet(path: str, tables: Iterable[Mapping[str, np.ndarray]],
                               names: Sequence[str], metadata: Mapping[str, str]) -> int:
    """Write each table (columns ``names``) as one row group of ``path``; how many rows.

    ``metadata`` goes into the file's key-value metadata (units, coordinates).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field(n, pa.int64() if n in INTEGER_COLUMNS else pa.float64())
                        for n in names], metadata=dict(metadata))
    written = 0
    with storage.publish(path) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        for table in tables:
            arrays = [_column(table[n], field.type) for n, field in zip(names, schema,
                                                                         strict=True)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            written += len(table["id"])
    return written


def _column(values: np.ndarray, kind: object) -> object:
    import pyarrow as pa

    if pa.types.is_integer(kind):
        return pa.array(np.asarray(values).astype(np.int64), type=kind)
    floats = np.asarray(values, np.float64)
    return pa.array(floats, type=kind, mask=~np.isfinite(floats))
