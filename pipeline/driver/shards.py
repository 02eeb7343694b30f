"""What a run scores, cut into shards, and the run folder's Parquet files.

Invariants:
- the requested archs are a function of the config alone (whole space, a seeded sample, or a list file),
  in canonical arch_id order, each once; shard k holds rows [k * shard_size, (k+1) * shard_size);
- shards are streamed to disk (never the whole space in memory at once) and can be regenerated at any
  time from the config, so a truncated shard is simply written again;
- every file is written to a temporary name and renamed, so a file that exists is complete; a file that
  cannot be read (a crash of another writer, a bad disk) is detected and redone;
- score files, their digests and their verification belong to ``pipeline/common/run_folder.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from gradsign.spaces.ground_truth import json_objects

SHARD_SCHEMA = pa.schema([pa.field("arch_id", pa.int64()), pa.field("arch", pa.string())])


class ArchListError(ValueError):
    """A sample.archs list file that is missing or holds a malformed arch (line number given)."""


def read_arch_list(path: str | Path, space) -> list[int]:
    """arch_ids of an arch-list file: one arch string a line (``#`` comments and blank lines skipped).

    A line may also be ``arch_id,arch`` or ``arch_id arch``; the id must then match the arch. Duplicates
    are scored once. ``.jsonl`` files hold records, ``.parquet`` tables an ``arch`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise ArchListError(f"arch list not found: {path}")
    if path.suffix == ".jsonl":
        return _read_jsonl_arch_list(path, space)
    if path.suffix == ".parquet":
        return _read_parquet_arch_list(path, space)
    ids: set[int] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        given_id = None
        head, _, rest = text.replace(",", " ", 1).partition(" ")
        if rest and head.isdigit():
            given_id, text = int(head), rest.strip()
        try:
            arch_id = space.arch_id(text)
        except ValueError as exc:
            raise ArchListError(f"{path}:{number}: {exc}") from None
        if given_id is not None and given_id != arch_id:
            raise ArchListError(f"{path}:{number}: arch_id {given_id} does not match {text!r} (its id is {arch_id})")
        ids.add(arch_id)
    if not ids:
        raise ArchListError(f"arch list {path} holds no architectures")
    return sorted(ids)


def _read_jsonl_arch_list(path: Path, space) -> list[int]:
    """arch_ids of a JSON-lines file: one object a line with ``arch``, or fields the space reads with
    ``from_record`` (NB101: ``matrix`` and ``ops``). Other fields are ignored; duplicates scored once."""
    ids: set[int] = set()
    for number, record in json_objects(path, ArchListError):
        try:
            if "arch" in record:
                arch = record["arch"]
            elif callable(getattr(space, "from_record", None)):
                arch = space.from_record(record)
            else:
                raise ValueError(f"no 'arch' field (fields: {sorted(record)})")
            ids.add(space.arch_id(arch))
        except ValueError as exc:
            raise ArchListError(f"{path}:{number}: {exc}") from None
    if not ids:
        raise ArchListError(f"arch list {path} holds no architectures")
    return sorted(ids)


def _read_parquet_arch_list(path: Path, space) -> list[int]:
    """arch_ids of a Parquet table's ``arch`` column (e.g. ``gradsign truth nds``); duplicates scored once."""
    try:
        table = pq.read_table(path, columns=["arch"])
    except (pa.ArrowInvalid, KeyError, OSError) as exc:
        raise ArchListError(f"arch list {path}: cannot read its 'arch' column: {exc}") from None
    ids: set[int] = set()
    for row, arch in enumerate(table.column("arch").to_pylist(), start=1):
        try:
            ids.add(space.arch_id(arch))
        except ValueError as exc:
            raise ArchListError(f"{path}: row {row}: {exc}") from None
    if not ids:
        raise ArchListError(f"arch list {path} holds no architectures")
    return sorted(ids)


def requested_ids(cfg: dict, space) -> Iterator[int]:
    """The arch_ids a run scores, ascending. Whole spaces are streamed, not listed."""
    sample = cfg["sample"]
    if sample["archs"] is not None:
        yield from read_arch_list(sample["archs"], space)
    elif sample["size"] is not None and sample["size"] < len(space):
        yield from space.sample_ids(sample["size"], sample["seed"])
    else:
        yield from range(len(space))


def iter_shards(cfg: dict, space) -> Iterator[tuple[int, pa.Table]]:
    """(shard index, table of arch_id/arch) for every shard, in order, built on the fly."""
    size = cfg["shard_size"]
    batch: list[int] = []
    index = 0
    for arch_id in requested_ids(cfg, space):
        batch.append(arch_id)
        if len(batch) == size:
            yield index, _shard_table(batch, space)
            index, batch = index + 1, []
    if batch:
        yield index, _shard_table(batch, space)


def _shard_table(ids: list[int], space) -> pa.Table:
    table = pa.Table.from_pydict({"arch_id": ids, "arch": [space.arch(i) for i in ids]}, schema=SHARD_SCHEMA)
    return with_key_column(table, space, ids)


def with_key_column(table: pa.Table, space, ids: list[int]) -> pa.Table:
    """Append the space's join-key column (NB101: ``hash``) when its key is not the arch string."""
    column = getattr(space, "key_column", None)
    if column is None or column in table.column_names:
        return table
    by_id = getattr(space, "key_by_id", None)
    keys = [by_id(i) if by_id else space.key(space.arch(i)) for i in ids]
    return table.append_column(pa.field(column, pa.string()), pa.array(keys, pa.string()))


def read_complete(path: Path, rows: int | None = None, schema: pa.Schema | None = None) -> pa.Table | None:
    """The table at ``path`` if it is complete (``rows`` rows, ``schema``'s columns), else None.

    A file that exists but may not be read (permissions) is an error, never "missing": reading a
    teammate's run folder must not look like an empty one, nor make a resume score everything again.
    """
    if not path.is_file():
        return None
    if not os.access(path, os.R_OK):
        raise PermissionError(f"cannot read {path}: permission denied (run folder of another user?)")
    try:
        table = pq.read_table(path)
    except PermissionError:
        raise
    except (pa.ArrowInvalid, OSError):
        return None
    if rows is not None and table.num_rows != rows:
        return None
    if schema is not None and table.column_names != schema.names:
        return None
    return table
