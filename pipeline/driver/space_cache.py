"""The user's cache folder: a validated copy of NAS-Bench-101's table of all graphs.

``spaces.nb101`` can enumerate its 423,624 graphs in about half a minute; a run's driver instead reads
them from ``<cache>/nb101-graphs-v1.parquet`` (a fraction of a second) when that file is valid: its row
count and checksum (``GraphTable.checksum``, over every column) must equal both the figures stored in its
metadata and those of the official space (``nb101_enum.SIZE``/``CHECKSUM``). A missing, unreadable or
invalid file is rebuilt (enumerated, validated, written to a temporary name and renamed), never trusted.

Cache folder: ``$GRADSIGN_CACHE``, else ``$XDG_CACHE_HOME/gradsign``, else ``~/.cache/gradsign``. Only the
driver needs the table (arch_id <-> arch); actors canonicalise, hash and build without it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gradsign import spaces
from gradsign.pipeline.common.cache import user_cache_dir as cache_dir
from gradsign.spaces.nb101_enum import CHECKSUM, SIZE, EnumerationError, GraphTable, enumerate_graphs

FILE_NAME = "nb101-graphs-v1.parquet"
_META_COUNT, _META_CHECKSUM = b"gradsign.count", b"gradsign.checksum"


def save_table(table: GraphTable, path: Path) -> None:
    """Write ``table`` to ``path`` atomically, with its count and checksum in the file metadata."""
    arrow = pa.table({
        "hash": pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), len(table),
                                                     [None, pa.py_buffer(table.hashes.tobytes())]),
        "vertices": pa.array(table.vertices, pa.int8()),
        "bits": pa.array(table.bits, pa.int32()),
        "labels": pa.array(table.labels, pa.int16()),
    }).replace_schema_metadata({_META_COUNT: str(len(table)).encode(), _META_CHECKSUM: table.checksum().encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(arrow, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_table(path: Path) -> GraphTable:
    """The table stored at ``path``; EnumerationError (or an Arrow/OS error) when it is not valid."""
    arrow = pq.read_table(path)
    meta = arrow.schema.metadata or {}
    if meta.get(_META_COUNT) != str(SIZE).encode() or meta.get(_META_CHECKSUM) != CHECKSUM.encode():
        raise EnumerationError(f"{path}: stored count/checksum are not those of the NB101 space")
    if arrow.num_rows != SIZE:
        raise EnumerationError(f"{path}: {arrow.num_rows} rows, expected {SIZE}")
    hashes = arrow.column("hash").combine_chunks()
    table = GraphTable(
        hashes=np.frombuffer(hashes.buffers()[1], dtype="S32", count=SIZE, offset=hashes.offset * 32).copy(),
        vertices=arrow.column("vertices").to_numpy().astype(np.int8),
        bits=arrow.column("bits").to_numpy().astype(np.int32),
        labels=arrow.column("labels").to_numpy().astype(np.int16),
    )
    table.validate()  # count, order, per-size counts, checksum of the content itself
    return table


def nb101_table(directory: Path | None = None, verbose: bool = True) -> GraphTable:
    """The NB101 table from the cache folder, built and cached first when missing or invalid."""
    path = (directory or cache_dir()) / FILE_NAME
    if path.is_file():
        try:
            return read_table(path)
        except (EnumerationError, pa.ArrowException, OSError, KeyError, ValueError) as exc:
            if verbose:
                print(f"gradsign: ignoring invalid NB101 cache {path} ({exc}); rebuilding it", file=sys.stderr)
    if verbose:
        print(f"gradsign: enumerating the NB101 space (once; cached in {path})", file=sys.stderr)
    table = enumerate_graphs()
    try:
        save_table(table, path)
    except OSError as exc:  # a read-only home is no reason to fail the run
        if verbose:
            print(f"gradsign: could not write the NB101 cache {path}: {exc}", file=sys.stderr)
    return table


def get_space(name: str):
    """``spaces.get(name)``, with NB101's table taken from the cache folder (the driver's way in)."""
    space = spaces.get(name)
    if hasattr(space, "attach_table") and not getattr(space, "has_table", True):
        space.attach_table(nb101_table())
    return space
