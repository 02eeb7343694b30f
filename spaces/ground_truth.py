"""Ground-truth tables (e.g. 200-epoch test accuracy) keyed on the canonical arch string.

A table is a CSV or Parquet file with an ``arch`` column and one column per metric; an ``index`` column
(the official benchmark index), when present, is carried along. Rows join on the canonical arch string,
never on a position, so any row order and any official numbering work.

Other formats plug in by file suffix (``register_reader``): ``pipeline.truth`` registers ``.pth``, so an
official NAS-Bench-201 file given as the path is converted once into such a table and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


class GroundTruthError(ValueError):
    """A table that cannot be used: missing file, no ``arch`` column, unknown metric column."""


@dataclass(frozen=True)
class GroundTruth:
    """``values[arch] = metric`` for every arch with a finite value; ``official_index`` where given.

    Several rows for one arch (a per-seed table, or one cell spelled two ways) are averaged over their
    finite values, never silently overwritten: ``duplicate_rows`` counts the rows beyond the first.
    """

    column: str
    values: dict[str, float]
    official_index: dict[str, int]
    duplicate_rows: int = 0


_READERS: dict[str, Callable[[Path], pa.Table]] = {}


def register_reader(suffix: str, reader: Callable[[Path], pa.Table]) -> None:
    """Read files ending in ``suffix`` (e.g. ``".pth"``) with ``reader(path) -> pa.Table``."""
    _READERS[suffix.lower()] = reader


def read_table(path: str | Path) -> pa.Table:
    """A CSV or Parquet table, or a file of a registered suffix; GroundTruthError if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise GroundTruthError(f"ground-truth table not found: {path}")
    reader = _READERS.get(path.suffix.lower())
    if reader is not None:
        return reader(path)
    if path.suffix.lower() == ".pth":
        raise GroundTruthError(f"{path}: a .pth benchmark file is converted by pipeline.truth (import pipeline, "
                               "or run `gradsign truth nb201 FILE.pth -o TABLE.parquet` and give the table)")
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        return pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise GroundTruthError(f"cannot read ground-truth table {path}: {exc}") from exc


def load(path: str | Path, column: str, space) -> GroundTruth:
    """Load ``column`` of the table at ``path``; arch strings are canonicalised by ``space``."""
    table = read_table(path)
    if "arch" not in table.column_names:
        raise GroundTruthError(f"ground-truth table {path} has no 'arch' column (columns: {table.column_names})")
    metrics = [c for c in table.column_names if c not in ("arch", "index")]
    if column not in table.column_names:
        raise GroundTruthError(
            f"ground-truth table {path} has no column {column!r}; its metric columns: {', '.join(metrics)}"
        )
    archs = table.column("arch").to_pylist()
    values = pc.cast(table.column(column), pa.float64()).to_pylist()
    index = table.column("index").to_pylist() if "index" in table.column_names else [None] * len(archs)
    sums: dict[str, list[float]] = {}
    official: dict[str, int] = {}
    seen: set[str] = set()
    duplicates = 0
    for arch, value, idx in zip(archs, values, index):
        key = space.canonical(arch)
        duplicates += key in seen
        seen.add(key)
        if value is not None and value == value:
            entry = sums.setdefault(key, [0.0, 0])
            entry[0] += float(value)
            entry[1] += 1
        if idx is not None:
            official.setdefault(key, int(idx))
    out = {key: total / count for key, (total, count) in sums.items()}
    return GroundTruth(column=column, values=out, official_index=official, duplicate_rows=duplicates)
