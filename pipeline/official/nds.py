"""NDS files (``DARTS.json``, ``ENAS.json``, ``Amoeba.json``, ``NASNet.json``, ``PNAS.json`` and their
``_fix-w-d``/``_lr-wd`` variants) -> the project's ground-truth / arch-list table.

``gradsign truth nds FILE.json -o TABLE.parquet [--space nds-darts]`` reads the file once and writes one
row per record; the table is what ``sample.archs`` and ``ground_truth.path`` of an NDS config take.

The published format: a JSON list of records, or ``{"top": [...], "mid": [...]}`` (the records of the top
and middle parts of the sampled population); each record has ``net`` {``genotype`` {``normal``,
``normal_concat``, ``reduce``, ``reduce_concat``} with ``[op, input]`` pairs, ``width``, ``depth``, ``aux``,
``drop_prob``}, ``params``, ``flops``, ``optim``, ``test_ep_top1`` (per-epoch top-1 **error**, %),
``min_test_top1``, ``train_ep_top1``, ``rng_seed``, ``job_id``.

Columns: ``arch`` (the space's canonical arch string: width, depth, genotype), ``index`` (the record's
position in the file: list order, or all of ``top`` then all of ``mid``), ``part`` (``top``/``mid``, or
null for a list), ``width``, ``depth``, ``test_accuracy_final`` = 100 - ``test_ep_top1[-1]`` (the last
epoch: what the GradSign and NASWOT code use), ``test_accuracy_best`` = 100 - ``min_test_top1`` (the best
epoch: what the NDS paper uses), ``params`` and ``flops`` as the file gives them, ``job_id``, ``rng_seed``.
Several records of one arch (seeds) stay separate rows; ground-truth loading averages them per key.

The space comes from ``--space`` or the file name (``DARTS*`` -> nds-darts, ...). ImageNet files
(``*_in.json``) are refused: the builder is the CIFAR network. A record that cannot be read is one
``TruthFileError`` naming the file, the record (part and position, job_id) and the problem; nothing is
written then.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from gradsign import spaces
from gradsign.pipeline.common.atomic import write_atomic
from gradsign.spaces.ground_truth import GroundTruthError

SPACE_BY_STEM = {"darts": "nds-darts", "enas": "nds-enas", "amoeba": "nds-amoeba", "nasnet": "nds-nasnet",
                 "pnas": "nds-pnas"}
SCHEMA = pa.schema([("arch", pa.string()), ("index", pa.int64()), ("part", pa.string()), ("width", pa.int64()),
                    ("depth", pa.int64()), ("test_accuracy_final", pa.float64()), ("test_accuracy_best", pa.float64()),
                    ("params", pa.float64()), ("flops", pa.float64()), ("job_id", pa.string()),
                    ("rng_seed", pa.int64())])


class TruthFileError(GroundTruthError):
    """An NDS file that cannot be converted; the message names the record and the problem."""


def space_for(path: Path, space: str | None = None) -> str:
    """The NDS space of a file: ``space`` if given, else from the file name."""
    if space is not None:
        if space not in SPACE_BY_STEM.values():
            raise TruthFileError(f"--space must be one of {', '.join(SPACE_BY_STEM.values())}, got {space!r}")
        return space
    parts = path.stem.lower().split("_")
    if "in" in parts[1:]:
        raise TruthFileError(f"{path.name}: an ImageNet NDS file (_in); only the CIFAR-10 files are supported")
    if parts[0] not in SPACE_BY_STEM:
        raise TruthFileError(f"{path.name}: cannot tell the NDS space from the file name; give --space "
                             f"({', '.join(SPACE_BY_STEM.values())})")
    return SPACE_BY_STEM[parts[0]]


def records(path: Path) -> Iterator[tuple[int, str | None, int, Any]]:
    """(index, part, position in part, record) for every record, in file order."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TruthFileError(f"NDS file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TruthFileError(f"{path}: not JSON: {exc}") from None
    if isinstance(data, list):
        parts = [(None, data)]
    elif isinstance(data, dict) and data and set(data) <= {"top", "mid"}:
        parts = [(p, data[p]) for p in ("top", "mid") if p in data]
        for name, part in parts:
            if not isinstance(part, list):
                raise TruthFileError(f"{path}: '{name}' must be a list of records, got {type(part).__name__}")
    else:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise TruthFileError(f"{path}: expected a list of records or {{'top': [...], 'mid': [...]}}, got {got}")
    index = 0
    for name, part in parts:
        for position, record in enumerate(part):
            yield index, name, position, record
            index += 1


def _number(record: dict, field: str, low: float | None = None, high: float | None = None) -> float:
    value = record.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{field} {value} is outside [{low}, {high}]")
    return float(value)


def _row(space, index: int, part: str | None, record: Any) -> dict:
    if not isinstance(record, dict):
        raise ValueError(f"a record must be an object, got {type(record).__name__}")
    net = record.get("net")
    if not isinstance(net, dict):
        raise ValueError("no 'net' object")
    arch = space.canonical(net)
    width, depth, _ = space.parse(arch)
    errors = record.get("test_ep_top1")
    if not isinstance(errors, list) or not errors:
        raise ValueError(f"test_ep_top1 must be a non-empty list of per-epoch errors, got {errors!r}")
    final = _number({"test_ep_top1[-1]": errors[-1]}, "test_ep_top1[-1]", 0, 100)
    best = _number(record, "min_test_top1", 0, 100)
    seed = record.get("rng_seed")
    return {"arch": arch, "index": index, "part": part, "width": width, "depth": depth,
            "test_accuracy_final": 100.0 - final, "test_accuracy_best": 100.0 - best,
            "params": _number(record, "params", 0), "flops": _number(record, "flops", 0),
            "job_id": None if record.get("job_id") is None else str(record["job_id"]),
            "rng_seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else None}


def convert(path: str | Path, space: str | None = None) -> tuple[str, pa.Table]:
    """(space name, table) of an NDS file; a TruthFileError names the first bad record."""
    path = Path(path)
    name = space_for(path, space)
    impl = spaces.get(name)
    rows = []
    for index, part, position, record in records(path):
        try:
            rows.append(_row(impl, index, part, record))
        except (ValueError, KeyError, TypeError) as exc:
            where = f"{part}[{position}]" if part else f"[{position}]"
            job = record.get("job_id") if isinstance(record, dict) else None
            raise TruthFileError(f"{path}: record {where}" + (f" (job_id {job})" if job is not None else "")
                                 + f": {exc}") from None
    if not rows:
        raise TruthFileError(f"{path}: no records")
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    meta = {"source": path.name, "space": name, "records": len(rows),
            "columns": {"test_accuracy_final": "100 - test_ep_top1[-1] (last epoch; GradSign/NASWOT)",
                        "test_accuracy_best": "100 - min_test_top1 (best epoch; the NDS paper)"}}
    return name, table.replace_schema_metadata({b"gradsign.nds": json.dumps(meta).encode()})


def write_table(table: pa.Table, out: str | Path) -> Path:
    out = Path(out)
    write_atomic(table, out)
    return out


def main_nds(file: str, output: str | None, space: str | None = None) -> int:
    """``gradsign truth nds FILE.json -o TABLE.parquet``: convert and report records, archs and parts."""
    src = Path(file)
    name, table = convert(src, space)
    out = write_table(table, output or src.with_suffix(".parquet"))
    parts = sorted({p for p in table.column("part").to_pylist() if p is not None})
    archs = len(set(table.column("arch").to_pylist()))
    print(f"{src}: {name}, {table.num_rows} records ({', '.join(parts) if parts else 'list'}), {archs} distinct "
          f"archs -> {out}")
    return 0
