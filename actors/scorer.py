"""The scorer: holds one data batch on its device and turns arch rows into score rows.

A plain class (the Ray batch-inference pattern: a callable holds state, batches stream through it);
``pipeline`` wraps it in a Ray actor. Invariants:
- a cell's weights come from ``arch_seed(run_seed, arch)`` alone, drawn on the CPU, so a score depends on
  (space, arch, batch, seed, proxy options) and never on which actor, device or order ran it;
- every proxy gets its own copy of the freshly initialised network (no proxy sees another's changes);
- an arch whose scoring raises gets NaN scores and its error text; its neighbours are still scored.
"""

from __future__ import annotations

import hashlib
import math
import time
import traceback
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch

import spaces
from actors import proxies


def arch_seed(run_seed: int, arch: str) -> int:
    """A 63-bit torch seed from (run seed, canonical arch string) only."""
    digest = hashlib.sha256(f"{int(run_seed)}|{arch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def score_schema(proxy_names: Sequence[str], key_column: str | None = None) -> pa.Schema:
    """Score rows: arch_id, arch, the space's key column if it has one (NB101 ``hash``), one float per
    proxy, nonfinite, seconds, error."""
    fields = [pa.field("arch_id", pa.int64()), pa.field("arch", pa.string())]
    if key_column is not None:
        fields.append(pa.field(key_column, pa.string()))
    fields += [pa.field(name, pa.float64()) for name in proxy_names]
    fields += [pa.field("nonfinite", pa.string()), pa.field("seconds", pa.float64()),
               pa.field("error", pa.string())]
    return pa.schema(fields)


def _key_or_none(space, arch: str) -> str | None:
    try:
        return spaces.key(space, arch)
    except ValueError:
        return None


class Scorer:
    """Scores arch rows with the given proxies on one batch.

    ``images`` float32 (N,3,H,W) already normalised, ``labels`` int64 (N,). ``device`` None picks CUDA
    when visible, else the CPU; ``num_threads`` sets torch's CPU threads (keep it = the actor's CPUs).
    """

    def __init__(
        self,
        space: str,
        proxy_names: Sequence[str],
        images: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        seed: int,
        device: str | None = None,
        num_threads: int | None = None,
        proxy_options: Mapping[str, Mapping[str, Any]] | None = None,
        plugins: Sequence[str] = (),
    ):
        proxies.load_plugins(plugins)
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.space = spaces.get(space)
        self.proxy_names = list(proxy_names)
        options = proxy_options or {}
        self.proxies = {name: proxies.get(name, **dict(options.get(name, {}))) for name in self.proxy_names}
        self.inputs = torch.tensor(np.asarray(images), dtype=torch.float32).to(self.device)
        self.targets = torch.tensor(np.asarray(labels), dtype=torch.int64).to(self.device)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.key_column = spaces.key_column(self.space)
        self.schema = score_schema(self.proxy_names, self.key_column)

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self.device)}"
        return f"cpu:{torch.get_num_threads()} threads"

    def score_one(self, arch: str) -> tuple[dict[str, float], dict[str, int]]:
        """Scores of one canonical arch, and the non-finite gradient counts of proxies that had any."""
        seed = arch_seed(self.seed, arch)
        values: dict[str, float] = {}
        nonfinite: dict[str, int] = {}
        for name, proxy in self.proxies.items():
            # Each proxy gets its own network at the same initial weights: rebuilding from the seed on the
            # CPU is cheaper than a deepcopy and gives identical weights on every device.
            torch.manual_seed(seed)
            net = self.space.build(arch, self.num_classes).to(self.device)
            value = proxy(net, self.inputs, self.targets)
            values[name] = float(value)
            if getattr(value, "nonfinite", 0):
                nonfinite[name] = int(value.nonfinite)
        return values, nonfinite

    def __call__(self, rows: pa.Table | Mapping[str, Sequence]) -> pa.Table:
        """Rows with ``arch_id`` and ``arch`` -> score rows (schema ``score_schema``), same order."""
        columns = rows.to_pydict() if isinstance(rows, pa.Table) else rows
        out: dict[str, list] = {field.name: [] for field in self.schema}
        keys = columns.get(self.key_column) if self.key_column else None
        for row, (arch_id, arch) in enumerate(zip(columns["arch_id"], columns["arch"])):
            start = time.perf_counter()
            error = None
            nonfinite: dict[str, int] = {}
            values = {name: math.nan for name in self.proxy_names}
            try:
                canonical = self.space.canonical(arch)
                values, nonfinite = self.score_one(canonical)
            except Exception as exc:  # recorded on the row; the shard goes on
                error = f"{type(exc).__name__}: {exc}".strip()
                if not isinstance(exc, ValueError):
                    error += "\n" + "".join(traceback.format_exception(exc)[-3:])
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
            out["arch_id"].append(int(arch_id))
            out["arch"].append(arch)
            if self.key_column:
                out[self.key_column].append(keys[row] if keys is not None else _key_or_none(self.space, arch))
            for name in self.proxy_names:
                out[name].append(values[name])
            out["nonfinite"].append(",".join(f"{k}:{v}" for k, v in nonfinite.items()) or None)
            out["seconds"].append(time.perf_counter() - start)
            out["error"].append(error)
        return pa.Table.from_pydict(out, schema=self.schema)
