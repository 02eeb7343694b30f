"""Official NAS-Bench-201 benchmark files -> the project's compact ground-truth / benchmark table.

``gradsign truth nb201 FILE.pth -o TABLE.parquet`` reads the official file (``NAS-Bench-201-v1_0-e61699.pth``
or ``NAS-Bench-201-v1_1-096897.pth``) once, in the driver's process, and writes one row per evaluated cell.
``ground_truth.path`` and the search stage's benchmark accept the table, or the ``.pth`` itself: it is then
converted once and cached (``cached_table``), keyed so that a changed file is converted again.

How the file is read. The file is a ``torch.save`` pickle of ``{"meta_archs", "arch2infos",
"evaluated_indexes"}`` (see ``support.nb201_synth``). It is loaded once with ``torch.load`` through a
restricted unpickler (C speed; only the few classes such a file can hold are allowed, so a tampered file
cannot run code; ``trust_pickle=True`` lifts that). Each cell's results are then rebuilt and queried with
the ``nas_201_api`` package's own classes, by the very calls ``NASBench201API`` makes:
``ArchResults.create_from_state_dict(arch2infos[i]["full" | "less"])`` (what ``NASBench201API.__init__``
does for hp ``"200"`` | ``"12"``), then ``ArchResults.get_metrics(split, set, iepoch=None, is_random=False)``
(the last epoch, mean over the trials (seeds); what ``api.get_more_info(i, split, hp=..., is_random=False)``
returns) and ``ArchResults.get_compute_costs(split)`` (what ``api.get_cost_info`` returns). The API object
itself is not built: given a dict it deep-copies it (twice the memory of a file that already needs
tens of GB). A test checks every column against ``NASBench201API(path).get_more_info`` / ``get_cost_info``.

Columns (``COLUMNS`` below is the single source): ``index`` (official index), ``arch`` (arch string);
accuracies in %, seed means; the dataset split and evaluation set each comes from follow the API's own
``remap_dataset_set_names`` (the NB201 paper's convention): CIFAR-10 validation = ``cifar10-valid``
(trained on the train half) on ``x-valid``; CIFAR-10 test = ``cifar10`` (trained on train+valid) on
``ori-test``; CIFAR-100 and ImageNet16-120 validation / test = the split's ``x-valid`` / ``x-test``.

Invariants: one row per evaluated cell, ordered by official index; a value the file does not hold (a v1_0
file has 12-epoch results for ``cifar10-valid`` only) is null, never made up; bad input raises
``TruthFileError`` (a ``ValueError``) with one message naming the problem.
"""

from __future__ import annotations

import gc
import hashlib
import json
import pickle
import resource
import time
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gradsign.pipeline.common.atomic import write_atomic
from gradsign.pipeline.common.cache import user_cache_dir
from gradsign.spaces import ground_truth
from gradsign.spaces.nb201 import ArchError, Cell, SIZE

CONVERTER_VERSION = 1
METADATA_KEY = b"gradsign.truth"
OFFICIAL_FILES = {"NAS-Bench-201-v1_0-e61699.pth": "v1_0", "NAS-Bench-201-v1_1-096897.pth": "v1_1"}
SPLITS = ("cifar10-valid", "cifar10", "cifar100", "ImageNet16-120")
_TORCH_MAGIC = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # pickled torch legacy MAGIC_NUMBER, after the PROTO op


class TruthFileError(ground_truth.GroundTruthError):
    """A file that cannot be converted: missing, not a benchmark file, another version/layout, truncated."""


@dataclass(frozen=True)
class Column:
    """One table column: ``hp`` epochs, dataset ``split``, what is read (``field``), and from which set."""

    name: str
    hp: str            # "200" (arch2infos[i]["full"]) or "12" (arch2infos[i]["less"])
    split: str         # the API's dataset name
    field: str         # "accuracy" | "train_seconds" | "eval_seconds" | "params" | "flops" | "trials"
    evalset: str = ""  # for accuracy / eval_seconds: "x-valid", "x-test" or "ori-test"

    def api_call(self) -> str:
        """The ``NASBench201API`` query (``api``, cell ``i``) that returns this value
        (docs/official-files.md, table metadata)."""
        hp = f"hp='{self.hp}'"
        if self.field == "accuracy":
            key = "test-accuracy" if self.evalset in ("x-test", "ori-test") else "valid-accuracy"
            return f"api.get_more_info(i, '{self.split}', {hp}, is_random=False)['{key}']"
        if self.field == "train_seconds":
            return f"api.get_more_info(i, '{self.split}', {hp}, is_random=False)['train-all-time']"
        if self.field == "eval_seconds":
            return f"api.get_more_info(i, '{self.split}', {hp}, is_random=False)['valid-per-time']"
        if self.field in ("params", "flops"):
            return f"api.get_cost_info(i, '{self.split}', {hp})['{self.field}']"
        return f"len(api.query_meta_info_by_index(i, {hp}).get_dataset_seeds('{self.split}'))"


_DATASETS = (("cifar10", "cifar10-valid", "cifar10"), ("cifar100", "cifar100", "cifar100"),
             ("imagenet16_120", "ImageNet16-120", "ImageNet16-120"))  # (prefix, valid split, test split)

COLUMNS: tuple[Column, ...] = (
    *(c for p, v, t in _DATASETS for c in (
        Column(f"{p}_valid", "200", v, "accuracy", "x-valid"),
        Column(f"{p}_test", "200", t, "accuracy", "ori-test" if t == "cifar10" else "x-test"))),
    *(c for p, v, _ in _DATASETS for c in (
        Column(f"{p}_valid_12ep", "12", v, "accuracy", "x-valid"),
        Column(f"{p}_train_seconds_12ep", "12", v, "train_seconds"),
        Column(f"{p}_valid_seconds_12ep", "12", v, "eval_seconds", "x-valid"))),
    *(c for p, _, t in _DATASETS for c in (
        Column(f"{p}_params", "200", t, "params"), Column(f"{p}_flops", "200", t, "flops"))),
    *(Column(f"{s.lower().replace('-', '_')}_trials", "200", s, "trials") for s in SPLITS),
)
COLUMN_DOCS = {
    "accuracy": "top-1 accuracy (%) after the last epoch, mean over the trials",
    "train_seconds": "training time of the whole schedule (s), mean over the trials",
    "eval_seconds": "time of one pass over the evaluation set (s, per-epoch mean), mean over the trials",
    "params": "parameters (millions)",
    "flops": "FLOPs of one image (millions)",
    "trials": "number of 200-epoch trials (seeds) averaged",
}


# --------------------------------------------------------------------------------------------------
# Reading the file


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"), ("torch", "Size"),
    ("torch", "device"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """The C unpickler, allowed only the classes a benchmark file holds (containers, numbers, tensors)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or (module == "torch" and name.endswith("Storage")):
            return super().find_class(module, name)
        raise TruthFileError(
            f"the file asks to unpickle {module}.{name}, which a NAS-Bench-201 benchmark file does not hold; "
            "refusing to run it (not a benchmark file, or a modified one). If you trust the file, convert it "
            "with `gradsign truth nb201 FILE --trust-pickle`"
        )


_SAFE_PICKLE = types.ModuleType("gradsign_restricted_pickle")
_SAFE_PICKLE.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
_SAFE_PICKLE.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()  # type: ignore[attr-defined]


def _check_container(path: Path) -> str:
    """What kind of file ``path`` is ("legacy" or "zip" torch file), or a TruthFileError saying why not."""
    if path.is_dir():
        raise TruthFileError(
            f"{path} is a directory, not a NAS-Bench-201 benchmark file (NATS-Bench and the NB201 archive "
            "ship folders; give the single NAS-Bench-201-v1_*.pth file)")
    if not path.is_file():
        raise TruthFileError(f"benchmark file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise TruthFileError(f"{path} is empty (0 bytes): a truncated download?")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            raise TruthFileError(f"{path} is truncated or corrupt: a zip-format torch file without its "
                                 f"central directory ({size:,} bytes); download it again")
        return "zip"
    if head.startswith(b"BZh"):
        raise TruthFileError(
            f"{path} is a bz2-compressed file (the NATS-Bench 'pickle.pbz2' layout), not a NAS-Bench-201 "
            "v1_0/v1_1 .pth file: wrong benchmark version/format")
    if head[:1] == b"\x80" and _TORCH_MAGIC in head[:32]:
        return "legacy"
    if head[:1] == b"\x80":
        raise TruthFileError(f"{path} is a plain pickle, not a torch.save file: not a NAS-Bench-201 benchmark file")
    raise TruthFileError(f"{path} is not a NAS-Bench-201 benchmark file (not a torch.save file; starts {head[:16]!r})")


def _load(path: Path, trust_pickle: bool = False) -> Any:
    """``torch.load`` of the whole file (map_location='cpu'), with clear errors for truncated/corrupt files."""
    import torch

    kind = _check_container(path)
    try:
        if trust_pickle:
            return torch.load(str(path), map_location="cpu", weights_only=False)
        return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_SAFE_PICKLE)
    except TruthFileError:
        raise
    except MemoryError:
        raise TruthFileError(
            f"out of memory loading {path} ({path.stat().st_size / 2**30:.1f} GiB): the whole file is unpickled "
            "at once; see docs/official-files.md for the memory the official file needs") from None
    except EOFError as exc:
        raise TruthFileError(f"{path} is truncated ({path.stat().st_size:,} bytes; the data ends early: {exc}); "
                             "download it again") from None
    except pickle.UnpicklingError as exc:
        if "truncated" in str(exc):
            raise TruthFileError(f"{path} is truncated ({path.stat().st_size:,} bytes; {exc}); "
                                 "download it again") from None
        raise TruthFileError(f"{path} is corrupt ({kind} torch file that does not unpickle: {exc})") from None
    except (RuntimeError, ValueError, OSError, zipfile.BadZipFile) as exc:
        text = str(exc)
        if any(s in text for s in ("central directory", "unexpected EOF", "truncated", "failed reading")):
            raise TruthFileError(f"{path} is truncated or corrupt ({text.splitlines()[0]}); "
                                 "download it again") from None
        raise TruthFileError(f"{path} cannot be loaded as a torch file: "
                             f"{text.splitlines()[0] if text else exc!r}") from None


def _check_layout(obj: Any, path: Path) -> None:
    """The top-level structure of a NAS-Bench-201 v1_0/v1_1 file, or a TruthFileError naming what differs."""
    if not isinstance(obj, dict):
        raise TruthFileError(f"{path} is not a NAS-Bench-201 benchmark file: it holds a {type(obj).__name__}, "
                             "not the benchmark dict")
    keys = ("meta_archs", "arch2infos", "evaluated_indexes")
    if not all(k in obj for k in keys):
        if "full" in obj and "less" in obj:
            raise TruthFileError(f"{path} is one architecture's file from the NAS-Bench-201 archive "
                                 "(keys 'full', 'less'), not the benchmark file NAS-Bench-201-v1_*.pth")
        raise TruthFileError(f"{path} is not a NAS-Bench-201 benchmark file: it has keys "
                             f"{sorted(map(str, obj))[:8]}, expected {list(keys)}")
    meta, infos = obj["meta_archs"], obj["arch2infos"]
    if not isinstance(meta, (list, tuple)) or not isinstance(infos, dict):
        raise TruthFileError(f"{path}: 'meta_archs' must be a list and 'arch2infos' a dict; got "
                             f"{type(meta).__name__} and {type(infos).__name__}")
    for index in infos:
        if not isinstance(index, int) or not 0 <= index < len(meta):
            raise TruthFileError(f"{path}: arch2infos key {index!r} is not an index into meta_archs "
                                 f"(0..{len(meta) - 1})")
    for index, entry in infos.items():
        if not isinstance(entry, dict) or not {"less", "full"} <= set(entry):
            found = sorted(map(str, entry)) if isinstance(entry, dict) else type(entry).__name__
            hint = (" (keyed by epochs, as NATS-Bench files are)" if isinstance(entry, dict)
                    and {"12", "200"} <= set(map(str, entry)) else "")
            raise TruthFileError(
                f"{path}: wrong version: arch2infos[{index}] has {found}{hint}; a NAS-Bench-201 v1_0/v1_1 "
                "file has 'less' (12 epochs) and 'full' (200 epochs) per cell")
        for hp in ("less", "full"):
            state = entry[hp]
            if not isinstance(state, dict) or not {"arch_str", "all_results", "dataset_seed"} <= set(state):
                raise TruthFileError(
                    f"{path}: wrong version: arch2infos[{index}]['{hp}'] is not an ArchResults state dict of the "
                    "nas_201_api package (no arch_str/all_results/dataset_seed)")
        break  # the first entry decides the layout; every cell is checked again while it is read


class _CellReader:
    """One cell's ``ArchResults`` per hp; each API query is made once per cell (several columns share it)."""

    def __init__(self, by_hp: dict[str, Any]):
        self.by_hp = by_hp
        self._memo: dict[tuple, Any] = {}

    def _call(self, hp: str, method: str, *args: str) -> Any:
        key = (hp, method, *args)
        if key not in self._memo:
            results = self.by_hp[hp]
            self._memo[key] = (results.get_compute_costs(*args) if method == "costs"
                               else results.get_metrics(*args, is_random=False))
        return self._memo[key]

    def read(self, col: Column) -> float | int | None:
        """One value (None where the file has none), by the calls ``Column.api_call`` names."""
        results = self.by_hp[col.hp]
        if col.split not in results.dataset_seed:
            return None
        if col.field == "trials":
            return len(results.get_dataset_seeds(col.split))
        if col.field in ("params", "flops"):
            return float(self._call(col.hp, "costs", col.split)[col.field])
        if col.evalset and not all(col.evalset in rc.get_eval_set() for rc in results.query(col.split).values()):
            return None
        if col.field == "accuracy":
            return float(self._call(col.hp, "metrics", col.split, col.evalset)["accuracy"])
        if col.field == "train_seconds":
            value = self._call(col.hp, "metrics", col.split, "train")["all_time"]
            return None if value is None else float(value)
        if col.field == "eval_seconds":  # the api: valid_info['all_time'] / total, total = last epoch + 1
            info = self._call(col.hp, "metrics", col.split, col.evalset)
            return None if info["all_time"] is None else float(info["all_time"]) / (info["iepoch"] + 1)
        raise AssertionError(col.field)


@dataclass(frozen=True)
class Conversion:
    """A converted file: the table and what was measured while converting it."""

    table: pa.Table
    layout: str          # "v1_0" or "v1_1" (from the 12-epoch splits present)
    cells: int
    space_size: int      # len(meta_archs): 15,625 in an official file
    load_seconds: float
    extract_seconds: float
    cpu_seconds: float   # process CPU time (user + system) of load + read
    peak_rss_mib: float  # the process's peak resident memory so far (includes the ~260 MiB of imports)


def _canonical_or_none(arch: Any) -> str | None:
    try:
        return str(Cell.parse(arch))
    except ArchError:
        return None


def convert(path: str | Path, trust_pickle: bool = False) -> Conversion:
    """Read a NAS-Bench-201 v1_0/v1_1 ``.pth`` (whole file, once) into the compact table (``COLUMNS``)."""
    from nas_201_api import ArchResults

    path = Path(path)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of containers, no cycles: the cyclic collector would only slow the load down
    try:
        start, cpu = time.perf_counter(), time.process_time()
        obj = _load(path, trust_pickle)
        loaded = time.perf_counter()
        _check_layout(obj, path)
        meta = obj["meta_archs"]
        infos = obj["arch2infos"]
        archs: list[str] = []
        for i, arch in enumerate(meta):
            try:
                archs.append(str(Cell.parse(arch)))
            except ArchError as exc:
                raise TruthFileError(f"{path}: wrong benchmark: meta_archs[{i}] is not a NAS-Bench-201 cell "
                                     f"({exc})") from None
        if len(set(archs)) != len(archs):
            raise TruthFileError(f"{path}: meta_archs lists an arch string twice")
        indexes = sorted(infos)
        values: dict[str, list] = {c.name: [] for c in COLUMNS}
        less_splits: set[str] = set()
        for index in indexes:
            entry = infos.pop(index)  # free each cell's results once read (the dict holds nearly all memory)
            try:
                by_hp = {"12": ArchResults.create_from_state_dict(entry["less"]),
                         "200": ArchResults.create_from_state_dict(entry["full"])}
                for hp, results in by_hp.items():
                    if results.arch_str != meta[index] and _canonical_or_none(results.arch_str) != archs[index]:
                        raise TruthFileError(f"{path}: arch2infos[{index}] is for {results.arch_str!r} but "
                                             f"meta_archs[{index}] is {meta[index]!r}")
                    epochs = {results.get_total_epoch(s) for s in results.get_dataset_names()}
                    if epochs and epochs != {int(hp)}:
                        raise TruthFileError(f"{path}: wrong version: cell {index} has {sorted(epochs)}-epoch "
                                             f"results where hp {hp} means {hp} epochs")
                less_splits.update(by_hp["12"].get_dataset_names())
                reader = _CellReader(by_hp)
                for col in COLUMNS:
                    values[col.name].append(reader.read(col))
            except TruthFileError:
                raise
            except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
                raise TruthFileError(f"{path}: cell {index} does not read as NAS-Bench-201 results "
                                     f"({type(exc).__name__}: {exc}); wrong version or corrupt file") from None
            del entry
        if not indexes:
            raise TruthFileError(f"{path}: the file holds no evaluated cell")
        columns: dict[str, pa.Array] = {
            "index": pa.array(indexes, pa.int64()),
            "arch": pa.array([archs[i] for i in indexes], pa.string()),
        }
        for col in COLUMNS:
            columns[col.name] = pa.array(values[col.name], pa.int64() if col.field == "trials" else pa.float64())
        layout = "v1_1" if less_splits - {"cifar10-valid"} else "v1_0"
        table = pa.table(columns)
        done = time.perf_counter()
        del obj, infos
    finally:
        if gc_was_enabled:
            gc.enable()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Conversion(table, layout, len(indexes), len(meta), loaded - start, done - loaded,
                      time.process_time() - cpu, peak)


# --------------------------------------------------------------------------------------------------
# Writing, caching, reading back


def fingerprint(path: str | Path) -> str:
    """A key that changes when the file does: size, mtime, the first and last MiB, the converter version."""
    path = Path(path)
    st = path.stat()
    digest = hashlib.sha256(f"v{CONVERTER_VERSION}:{st.st_size}:{st.st_mtime_ns}:".encode())
    with open(path, "rb") as f:
        digest.update(f.read(2**20))
        if st.st_size > 2**20:
            f.seek(max(st.st_size - 2**20, 2**20))
            digest.update(f.read())
    return digest.hexdigest()[:16]


def write_table(conv: Conversion, source: Path, out: str | Path) -> Path:
    """Write the table to ``out`` (Parquet, atomically: temp name then rename), with its provenance."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "source": source.name, "source_bytes": source.stat().st_size, "fingerprint": fingerprint(source),
        "benchmark": "NAS-Bench-201", "layout": conv.layout, "official_name": OFFICIAL_FILES.get(source.name),
        "cells": conv.cells, "space_size": conv.space_size, "converter_version": CONVERTER_VERSION,
        "columns": {c.name: f"{COLUMN_DOCS[c.field]}; {c.api_call()}" for c in COLUMNS},
    }
    write_atomic(conv.table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()}), out)
    return out


def table_metadata(path: str | Path) -> dict | None:
    """The provenance a converted table carries (None for any other table)."""
    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    return None if raw is None else json.loads(raw)


def cache_candidates(pth: str | Path) -> list[Path]:
    """Where the conversion of ``pth`` is looked for, in order: next to the file, then the user cache."""
    pth = Path(pth).resolve()
    key = fingerprint(pth)
    return [pth.with_name(f"{pth.name}.gradsign-{key}.parquet"), user_cache_dir() / f"{pth.stem}-{key}.parquet"]


def cached_table(pth: str | Path, trust_pickle: bool = False, log=None) -> Path:
    """The converted table of ``pth``: an existing conversion with the file's current fingerprint, or a new
    one written next to the file (or, if that folder is not writable, into the user cache)."""
    pth = Path(pth)
    _check_container(pth)
    candidates = cache_candidates(pth)
    for cand in candidates:
        if cand.is_file():
            meta = table_metadata(cand) or {}
            if meta.get("fingerprint") == fingerprint(pth) and meta.get("converter_version") == CONVERTER_VERSION:
                return cand
    if log is not None:
        log(f"converting {pth} once (cached for later runs); this reads the whole file")
    conv = convert(pth, trust_pickle)
    for cand in candidates:
        try:
            out = write_table(conv, pth, cand)
        except OSError:
            continue
        for stale in cand.parent.glob(cand.name.replace(fingerprint(pth), "*")):
            if stale != out:
                stale.unlink(missing_ok=True)
        return out
    raise TruthFileError(f"cannot write the converted table of {pth} next to it nor in {user_cache_dir()}")


def read_any(path: str | Path) -> pa.Table:
    """A table from a converted/other Parquet or CSV, or an official ``.pth`` (converted once, cached)."""
    path = Path(path)
    if path.suffix.lower() == ".pth":
        return pq.read_table(cached_table(path, log=_stderr))
    return ground_truth.read_table(path)


def _stderr(message: str) -> None:
    import sys

    print(f"gradsign: {message}", file=sys.stderr, flush=True)


def load_benchmark(path: str | Path) -> dict[str, np.ndarray]:
    """A benchmark table as plain numpy columns, for the search stage (no pyarrow/pandas needed by callers).

    ``path``: a table this module wrote, the official ``.pth`` (converted once and cached), or any
    CSV/Parquet with an NB201 ``arch`` column (e.g. the shipped ``nb201_cifar10_hp12.csv``). Returns every
    column of the table plus ``arch_id`` (this project's canonical order), rows sorted by ``arch_id``:
    ``arch`` is an object array of canonical arch strings, integer columns without nulls are int64, every
    other numeric column float64 with NaN where the file holds no value. With all 15,625 cells, row ``i``
    is ``arch_id`` ``i``. An arch listed twice or a non-NB201 arch raises ``GroundTruthError``.
    """
    table = read_any(path)
    if "arch" not in table.column_names:
        raise ground_truth.GroundTruthError(f"benchmark table {path} has no 'arch' column "
                                            f"(columns: {table.column_names})")
    try:
        cells = [Cell.parse(a) for a in table.column("arch").to_pylist()]
    except ArchError as exc:
        raise ground_truth.GroundTruthError(f"benchmark table {path}: {exc}") from None
    arch_id = np.array([c.arch_id for c in cells], dtype=np.int64)
    if np.unique(arch_id).size != arch_id.size:
        raise ground_truth.GroundTruthError(f"benchmark table {path} lists an arch twice")
    order = np.argsort(arch_id, kind="stable")
    out: dict[str, np.ndarray] = {"arch_id": arch_id[order],
                                  "arch": np.array([str(cells[i]) for i in order], dtype=object)}
    for name in table.column_names:
        if name == "arch":
            continue
        col = table.column(name)
        if pa.types.is_integer(col.type) and col.null_count == 0:
            values = col.to_numpy().astype(np.int64)
        elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
            values = col.cast(pa.float64()).fill_null(float("nan")).to_numpy()
        else:
            values = np.array(col.to_pylist(), dtype=object)
        out[name] = values[order]
    return out


def columns_markdown() -> str:
    """The column table of docs/official-files.md, generated from ``COLUMNS``."""
    lines = ["| column | split, set | what | NASBench201API call |", "|---|---|---|---|",
             "| `index` | | official index (position in `meta_archs`) | `api.query_index_by_arch(arch)` |",
             "| `arch` | | arch string | `api[i]` |"]
    for c in COLUMNS:
        where = f"`{c.split}`" + (f" `{c.evalset}`" if c.evalset else "") + f", {c.hp} ep"
        lines.append(f"| `{c.name}` | {where} | {COLUMN_DOCS[c.field]} | `{c.api_call()}` |")
    return "\n".join(lines)


def main_nb201(file: str, output: str | None, trust_pickle: bool = False) -> int:
    """``gradsign truth nb201 FILE [-o TABLE]``: convert and report cells, layout, seconds and peak memory."""
    src = Path(file)
    if output is None:
        out = cached_table(src, trust_pickle, log=_stderr)
        meta = table_metadata(out) or {}
        print(f"{src}: NAS-Bench-201 {meta.get('layout')} layout, {meta.get('cells')} cells -> {out}")
        return 0
    conv = convert(src, trust_pickle)
    out = write_table(conv, src, output)
    print(f"{src}: NAS-Bench-201 {conv.layout} layout, {conv.cells} of {conv.space_size} cells -> {out}")
    print(f"load {conv.load_seconds:.1f} s, read {conv.extract_seconds:.1f} s (wall; CPU {conv.cpu_seconds:.1f} s), "
          f"peak RSS {conv.peak_rss_mib:,.0f} MiB")
    if conv.space_size != SIZE:
        print(f"note: meta_archs has {conv.space_size} archs, the full NB201 space has {SIZE}")
    return 0


def read_pth_table(path: str | Path) -> pa.Table:
    """The table of an official ``.pth`` given as ``ground_truth.path`` (converted once, then cached);
    ``gradsign.pipeline`` registers it with ``spaces.ground_truth`` for the ``.pth`` suffix."""
    return pq.read_table(cached_table(path, log=_stderr))
