"""Ground-truth tables (e.g. 200-epoch test accuracy) keyed on the space's join key.

A table is a CSV, Parquet or JSON-lines file with one column per metric and, per row, what identifies
the architecture, tried in this order:
1. the space's key column when it has one and the table carries it (NB101: ``hash``, the official graph
   hash: every published NB101 export is keyed by it);
2. an ``arch`` column (any spelling the space parses);
3. JSON lines only: the fields the space reads itself (NB101: ``matrix`` and ``ops``; DARTS: its
   ``record_fields``, ``normal`` and ``reduce``, with ``concat`` columns when present).
Rows join on ``space.key`` (NB201: the canonical arch string; NB101: the hash), never on a position. An
``index`` column (the official benchmark index), when present, is carried along.

Several rows with one key are averaged only when they are repeats of one measurement (NB101 tables often
hold several specs that prune to one graph, or several training seeds): ``values[key]`` is the mean of the
finite values, ``counts[key]`` how many rows went into it; ``rows`` is the table's row count. Rows of one
key that differ in a *label* column measure different things and are never averaged: such a table is
refused unless ``where`` selects one value per label (``{"dataset": "cifar10"}``, ``{"epochs": 200}``: only
the rows holding that value are read). A label is any column other than the metric, the identifying
ones (``arch``, ``index``, ``matrix``, ``ops``, the space's key column and record fields (DARTS
``normal``/``reduce``), the row names of benchmark files (``job_id``, ``part``, ``*concat``)) and the
floating-point columns, numeric or not: text (``dataset``), integers (``epochs`` 12 / 200,
``dataset_id`` 10 / 100), booleans. Floating-point columns are measurements (other metrics, NB101 proxy
columns of specs that prune to one graph) and may differ between repeats, and so may ``seed`` and
``rng_seed`` (``REPEATS``): rows that differ only there are repeats of one measurement, averaged. The identifying
columns (and ``arch_id``, ``official_index``, ``hash``) are refused as the metric.

Other formats plug in by file suffix (``register_reader``): ``gradsign.pipeline.official.register_readers()``
registers ``.pth``, so an official NAS-Bench-201 file given as the path is converted once into such a table and cached.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


class GroundTruthError(ValueError):
    """A table that cannot be used: missing file, no way to identify rows, unknown metric column."""


@dataclass(frozen=True)
class GroundTruth:
    """``values[key] = mean metric`` over the rows with that key and a finite value; ``counts[key]`` the
    number of such rows; ``official_index`` where given; ``rows`` the table's row count."""

    column: str
    values: dict[str, float]
    official_index: dict[str, int]
    counts: dict[str, int] = field(default_factory=dict)
    rows: int = 0

    @property
    def averaged_keys(self) -> int:
        """Keys whose value is a mean of more than one row."""
        return sum(1 for c in self.counts.values() if c > 1)


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
        raise GroundTruthError(f"{path}: a .pth benchmark file is converted by gradsign.pipeline.official.nb201 (call "
                               "gradsign.pipeline.official.register_readers() first, "
                               "or run `gradsign truth nb201 FILE.pth -o TABLE.parquet` and give the table)")
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        if path.suffix == ".jsonl":
            return _read_jsonl(path)
        return pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise GroundTruthError(f"cannot read ground-truth table {path}: {exc}") from exc


def json_objects(path: Path, error: type[Exception] | None = None):
    """(line number, object) for every non-blank line of a JSON-lines file; ``error`` (default
    GroundTruthError) names the line that is not a JSON object."""
    error = error or GroundTruthError
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise error(f"{path}:{number}: not a JSON object")
        yield number, record


def _read_jsonl(path: Path) -> pa.Table:
    records = [record for _, record in json_objects(path)]
    if not records:
        raise GroundTruthError(f"ground-truth table {path} is empty")
    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # nested values Arrow cannot type (DARTS genotypes: lists of [op, input] pairs, str and int mixed)
        # are kept as their JSON text; _row_keys decodes the record fields it reads
        nested = {k for r in records for k, v in r.items() if isinstance(v, (list, dict))}
        return pa.Table.from_pylist([{k: json.dumps(v) if k in nested and v is not None else v
                                      for k, v in r.items()} for r in records])


def _row_keys(table: pa.Table, path, space) -> list[str]:
    """The join key of every row (see the module docstring for the order tried)."""
    from . import key as space_key
    from . import key_column

    names = table.column_names
    column = key_column(space)
    if column is not None and column in names:
        return [None if k is None else str(k) for k in table.column(column).to_pylist()]
    if "arch" in names:
        archs = table.column("arch").to_pylist()
    elif callable(getattr(space, "from_record", None)) and "matrix" in names and "ops" in names:
        archs = [{"matrix": m, "ops": o} for m, o in zip(table.column("matrix").to_pylist(),
                                                            table.column("ops").to_pylist())]
    elif _record_columns(space, names):  # e.g. DARTS: normal/reduce (+ concat)
        fields = _record_columns(space, names)
        archs = [{f: json.loads(v) if isinstance(v, str) else v for f, v in zip(fields, row)}
                 for row in zip(*(table.column(f).to_pylist() for f in fields))]
    else:
        wanted = "'arch'" + (f" or {column!r}" if column else "")
        raise GroundTruthError(f"ground-truth table {path} has no {wanted} column (columns: {names})")
    keys = []
    for row, arch in enumerate(archs, start=1):
        try:
            keys.append(space_key(space, arch))
        except ValueError as exc:
            raise GroundTruthError(f"ground-truth table {path}, row {row}: {exc}") from None
    return keys


def _record_columns(space, names: list[str]) -> list[str]:
    """The columns a space's ``from_record`` reads (``space.record_fields``, plus ``*concat`` columns the
    table has), or [] when the space declares none or the table lacks one."""
    fields = list(getattr(space, "record_fields", ()) or ())
    if not fields or not callable(getattr(space, "from_record", None)) or any(f not in names for f in fields):
        return []
    return fields + [c for c in ("concat", "normal_concat", "reduce_concat") if c in names]


IDENTIFYING = ("arch", "index", "matrix", "ops", "hash", "arch_id", "official_index")
# Columns that spell the arch (a space's ``record_fields``: DARTS ``normal``/``reduce``) or name a row of a
# benchmark file (NDS ``job_id``, ``part``): identifying, never labels or metrics.
RECORD_IDENTIFYING = ("concat", "normal_concat", "reduce_concat", "naslib_compact", "job_id", "part")


def identifying_columns(space) -> set:
    return {*IDENTIFYING, getattr(space, "key_column", None), *(getattr(space, "record_fields", ()) or ()),
            *RECORD_IDENTIFYING}


def _matches(value, wanted) -> bool:
    """A cell equals a ``where`` value (YAML gives ``cifar10`` or ``777``; a CSV may hold either type)."""
    return value == wanted or (value is not None and str(value) == str(wanted))


def select_rows(table: pa.Table, where: dict | None, path) -> pa.Table:
    """The rows whose every ``where`` column holds its value; GroundTruthError naming what is missing."""
    if not where:
        return table
    for name, wanted in where.items():
        if name not in table.column_names:
            raise GroundTruthError(f"table {path} has no column {name!r} to select on (where: {where}); its "
                                   f"columns: {', '.join(table.column_names)}")
        cells = table.column(name).to_pylist()
        keep = [_matches(v, wanted) for v in cells]
        if not any(keep):
            present = sorted({str(v) for v in cells})
            raise GroundTruthError(f"table {path}: no row has {name} = {wanted!r} (where: {where}); its values: "
                                   f"{', '.join(present[:10])}{', ...' if len(present) > 10 else ''}")
        table = table.filter(pa.array(keep, pa.bool_()))
    return table


# Columns that number repeats of one measurement: rows differing there are averaged, not refused.
REPEATS = ("seed", "rng_seed")  # rng_seed: NDS tables (pipeline/official/nds.py)


def label_columns(table: pa.Table, metric: str, space) -> list[str]:
    """The columns that say what a row measures: every column but the metric, the identifying ones, the
    repeat numbers (``REPEATS``) and floating-point measurements; text, integers and booleans alike."""
    identifying = identifying_columns(space)
    measured = (pa.types.is_floating, pa.types.is_decimal, pa.types.is_null)
    return [f.name for f in table.schema if f.name not in identifying and f.name != metric
            and f.name not in REPEATS and not any(test(f.type) for test in measured)]


def check_one_meaning(table: pa.Table, keys: list, metric: str, space, path, describe=str) -> None:
    """Refuse rows of one key that differ in a label column (they measure different things): one message
    naming the column, an example key and the values, and how to select one (``where``)."""
    labels = label_columns(table, metric, space)
    if not labels:
        return
    cells = [table.column(c).to_pylist() for c in labels]
    first: dict = {}
    differing: dict[str, tuple] = {}  # label column -> (key, one value, another value)
    conflicts = 0
    for row, key in enumerate(keys):
        if key is None:
            continue
        values = tuple(column[row] for column in cells)
        seen = first.setdefault(key, values)
        if seen != values:
            conflicts += 1
            for name, a, b in zip(labels, seen, values):
                if a != b:
                    differing.setdefault(name, (key, a, b))
    if not differing:
        return
    name, (key, a, b) = next(iter(differing.items()))
    choices = sorted({str(v) for v in table.column(name).to_pylist()})
    raise GroundTruthError(
        f"table {path} has rows with different meanings for one arch, which are not averaged: "
        f"{describe(key)} has a row with {name} = {a!r} and one with {name} = {b!r} ({conflicts} such rows; "
        f"differing column(s): {', '.join(differing)}). Select one value, e.g. where: {{{name}: {a}}} "
        f"(values of {name}: {', '.join(choices[:10])}{', ...' if len(choices) > 10 else ''})")


def load(path: str | Path, column: str, space, where: dict | None = None) -> GroundTruth:
    """Load ``column`` of the table at ``path`` (only the rows ``where`` selects), keyed by ``space.key``
    and averaged per key over repeats of one measurement (see the module docstring)."""
    table = read_table(path)
    identifying = identifying_columns(space)
    metrics = [c for c in table.column_names if c not in identifying]
    if column in identifying:
        raise GroundTruthError(f"ground-truth column {column!r} of {path} identifies rows, it is not a metric; "
                               f"its metric columns: {', '.join(metrics)}")
    if column not in table.column_names:
        raise GroundTruthError(
            f"ground-truth table {path} has no column {column!r}; its metric columns: {', '.join(metrics)}"
        )
    table = select_rows(table, where, f"{path} (ground truth)")
    keys = _row_keys(table, path, space)
    check_one_meaning(table, keys, column, space, f"{path} (ground truth)")
    try:
        values = pc.cast(table.column(column), pa.float64()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise GroundTruthError(f"ground-truth column {column!r} of {path} is not numeric: {exc}") from None
    index = table.column("index").to_pylist() if "index" in table.column_names else [None] * len(keys)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    official: dict[str, int] = {}
    for key, value, idx in zip(keys, values, index):
        if key is None:
            continue
        if value is not None and math.isfinite(value):
            sums[key] = sums.get(key, 0.0) + float(value)
            counts[key] = counts.get(key, 0) + 1
        if idx is not None:
            official[key] = int(idx)
    means = {key: sums[key] / counts[key] for key in sums}
    return GroundTruth(column=column, values=means, official_index=official, counts=counts, rows=table.num_rows)


def row_values(path: str | Path, column: str, space) -> list[tuple[str | None, float]]:
    """(key, value) of every row of the table at ``path``, in file order, nothing averaged: what a peer
    that counts each row (NB101 tables: one row per training seed or per spec) correlates against. A
    missing value is NaN; a missing or non-numeric column is a GroundTruthError."""
    table = read_table(path)
    if column not in table.column_names:
        raise GroundTruthError(f"ground-truth table {path} has no column {column!r}")
    keys = _row_keys(table, path, space)
    try:
        values = pc.cast(table.column(column), pa.float64()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise GroundTruthError(f"ground-truth column {column!r} of {path} is not numeric: {exc}") from None
    return [(k, math.nan if v is None else float(v)) for k, v in zip(keys, values)]
