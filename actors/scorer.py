"""The scorer: holds one data batch on its device and turns arch rows into score rows.

A plain class (the Ray batch-inference pattern: a callable holds state, batches stream through it);
``pipeline`` wraps it in a Ray actor. Invariants:
- a cell's weights come from ``arch_seed(run_seed, arch)`` alone, drawn on the CPU, so a score depends on
  (space, arch, batch, seed, proxy options) and never on which actor, device or order ran it;
- every proxy gets its own copy of the freshly initialised network (no proxy sees another's changes);
- float32 math is exact fp32 unless ``precision="tf32"``: the scorer turns TF32 off for cuDNN convolutions
  and CUDA matmuls (PyTorch enables it for cuDNN by default), so GPU scores are the numbers the
  engine-vs-loop agreement was measured with, whatever the device;
- a proxy that raises costs only that proxy's value on that row (NaN) and puts ``proxy: error`` in the
  row's ``error``; the other proxies of the row keep their values; its neighbours are still scored;
- an out-of-memory error is retried on this actor before it is recorded: the cache is emptied and, for a
  proxy with a ``memory_budget_mb`` option (GradSign's chunking), the budget is halved each time, so a
  GPU shared with other actors gets smaller chunks rather than a failed row;
- ``cohort`` > 1 (GradSign's hooks engine on a space that builds cohorts: NB201) scores the GradSign
  column of a batch of rows ``cohort`` cells per pass (``actors.cohort``), each cell's weights still drawn
  from its own ``arch_seed``; the values equal the per-cell path's (within the tolerance between engines),
  so a row's scores do not depend on the cohort size. A cohort the engine cannot vouch for, or that fails
  (out of memory included), is scored one cell at a time as with ``cohort`` 1. Other proxies, other spaces
  and other GradSign engines always go one cell at a time. A row's ``seconds`` then holds its share of its
  cohort's time.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
import traceback
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.actors.rows import score_schema  # noqa: F401  (the row schema; re-exported)


def arch_seed(run_seed: int, arch: str) -> int:
    """A 63-bit torch seed from (run seed, canonical arch string) only."""
    digest = hashlib.sha256(f"{int(run_seed)}|{arch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


PRECISIONS = ("fp32", "tf32")


def set_precision(precision: str) -> None:
    """Process-wide float32 precision: ``fp32`` (exact: TF32 off for cuDNN and matmuls) or ``tf32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


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
        precision: str = "fp32",
        cohort: int = 1,
        cohort_memory_mb: int | None = None,
    ):
        proxies.load_plugins(plugins)
        set_precision(precision)
        self.precision = precision
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.space = spaces.get(space)
        self.proxy_names = list(proxy_names)
        options = proxy_options or {}
        self.options = {name: dict(options.get(name, {})) for name in self.proxy_names}
        self.proxies = {name: proxies.get(name, **self.options[name]) for name in self.proxy_names}
        self.inputs = torch.tensor(np.asarray(images), dtype=torch.float32).to(self.device)
        self.targets = torch.tensor(np.asarray(labels), dtype=torch.int64).to(self.device)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.key_column = spaces.key_column(self.space)
        self.schema = score_schema(self.proxy_names, self.key_column)
        if isinstance(cohort, bool) or not isinstance(cohort, int) or cohort < 1:
            raise ValueError(f"cohort must be an integer >= 1, got {cohort!r}")
        self.cohort = cohort
        self.cohort_memory_mb = cohort_memory_mb
        self.cohort_timing = None

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self.device)} ({self.precision})"
        return f"cpu:{torch.get_num_threads()} threads"

    def score_one(self, arch: str, given: Mapping[str, float] | None = None
                  ) -> tuple[dict[str, float], dict[str, int], dict[str, str]]:
        """Scores of one canonical arch, the non-finite gradient counts of proxies that had any, and the
        error text of proxies that failed (their value is NaN). ``given``: values already computed (by the
        cohort engine) for some proxies."""
        seed = arch_seed(self.seed, arch)
        values: dict[str, float] = {}
        nonfinite: dict[str, int] = {}
        errors: dict[str, str] = {}
        families: dict = {}  # proxies that share one computation (``family``): its values, or its exception
        for name in self.proxy_names:
            try:
                if given and name in given:
                    value = given[name]
                elif getattr(self.proxies[name], "family", None) is not None:
                    value = self._family_value(name, arch, seed, families)
                else:
                    value = self._score_proxy(name, arch, seed)
            except Exception as exc:  # this proxy's value is lost, not the row
                values[name] = math.nan
                errors[name] = _error_text(exc)
                self._free()
                continue
            values[name] = float(value)
            if getattr(value, "nonfinite", 0):
                nonfinite[name] = int(value.nonfinite)
        return values, nonfinite, errors

    def _family_value(self, name: str, arch: str, seed: int, families: dict) -> float:
        """``name``'s value from its family's one computation on this arch (made by the first member asked)."""
        proxy = self.proxies[name]
        if proxy.family not in families:
            try:
                families[proxy.family] = proxy.family_values(self._fresh_net(arch, seed), self.inputs, self.targets)
            except Exception as exc:  # every member of the family fails with it
                families[proxy.family] = exc
        result = families[proxy.family]
        if isinstance(result, Exception):
            raise result
        return result[name]

    def _fresh_net(self, arch: str, seed: int) -> torch.nn.Module:
        # Each proxy gets its own network at the same initial weights: rebuilding from the seed on the CPU
        # is cheaper than a deepcopy and gives identical weights on every device.
        torch.manual_seed(seed)
        return self.space.build(arch, self.num_classes).to(self.device)

    def _score_proxy(self, name: str, arch: str, seed: int, oom_retries: int = 3) -> float:
        proxy = self.proxies[name]
        budget = self.options[name].get("memory_budget_mb")
        for attempt in range(oom_retries + 1):
            try:
                return proxy(self._fresh_net(arch, seed), self.inputs, self.targets)
            except torch.OutOfMemoryError:
                if attempt == oom_retries:
                    raise
                self._free()
                factory = proxies.factory(name)
                options = inspect.signature(factory).parameters
                if "memory_budget_mb" in options:  # a chunked proxy: half the memory per chunk
                    budget = max(1, int(options["memory_budget_mb"].default if budget is None else budget) // 2)
                    proxy = factory(**{**self.options[name], "memory_budget_mb": budget})
        raise AssertionError("unreachable")

    def _free(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __call__(self, rows: pa.Table | Mapping[str, Sequence]) -> pa.Table:
        """Rows with ``arch_id`` and ``arch`` -> score rows (schema ``score_schema``), same order."""
        columns = rows.to_pydict() if isinstance(rows, pa.Table) else rows
        out: dict[str, list] = {field.name: [] for field in self.schema}
        keys = columns.get(self.key_column) if self.key_column else None
        given, shares = self._cohort_values(columns["arch"])
        for row, (arch_id, arch) in enumerate(zip(columns["arch_id"], columns["arch"])):
            start = time.perf_counter() - shares.get(row, 0.0)
            nonfinite: dict[str, int] = {}
            values = {name: math.nan for name in self.proxy_names}
            try:
                canonical = self.space.canonical(arch)
            except Exception as exc:  # a malformed arch: every proxy's value is lost
                errors = {"arch": _error_text(exc)}
            else:
                values, nonfinite, errors = self.score_one(canonical, given.get(row))
            out["arch_id"].append(int(arch_id))
            out["arch"].append(arch)
            if self.key_column:
                out[self.key_column].append(keys[row] if keys is not None else _key_or_none(self.space, arch))
            for name in self.proxy_names:
                out[name].append(values[name])
            out["nonfinite"].append(",".join(f"{k}:{v}" for k, v in nonfinite.items()) or None)
            out["seconds"].append(time.perf_counter() - start)
            out["error"].append("\n".join(f"{k}: {v}" for k, v in errors.items()) or None)
        return pa.Table.from_pydict(out, schema=self.schema)


    # -- the cohort path (GradSign only) ---------------------------------------------------------------
    def cohort_ready(self) -> bool:
        """Whether GradSign's column goes through the cohort engine (cohort > 1, GradSign's hooks engine in
        its per-sample BatchNorm mode, a space that builds cohorts)."""
        from gradsign.actors import cohort

        options = self.options.get("gradsign")
        return (self.cohort > 1 and options is not None and options.get("engine", "hooks") == "hooks"
                and options.get("bn", "sample") == "sample" and cohort.supports(self.space))

    def _cohort_values(self, archs: Sequence[str]) -> tuple[dict[int, dict[str, float]], dict[int, float]]:
        """(row -> {"gradsign": value}, row -> seconds of its cohort's time) for the rows the cohort engine
        scored; rows it did not (malformed, a cohort it refused or that failed) are absent."""
        if not self.cohort_ready():
            return {}, {}
        from gradsign.actors import cohort

        options = self.options["gradsign"]
        if self.cohort_timing is None:
            self.cohort_timing = cohort.CohortTiming()
        rows, canonical = [], []
        for row, arch in enumerate(archs):
            try:
                canonical.append(self.space.canonical(arch))
            except Exception:  # noqa: BLE001 - its row records the error on the per-cell path
                continue
            rows.append(row)
        given: dict[int, dict[str, float]] = {}
        shares: dict[int, float] = {}
        for part in cohort.batches(list(zip(rows, canonical)), self.cohort):
            start = time.perf_counter()
            try:
                values = cohort.score_cohort(
                    self.space, [a for _, a in part], [arch_seed(self.seed, a) for _, a in part], self.num_classes,
                    self.inputs, self.targets, chunk_size=options.get("chunk_size"),
                    memory_budget_mb=self.cohort_memory_mb or cohort.DEFAULT_COHORT_MEMORY_MB,
                    conv_method=options.get("conv_method", "auto"), timing=self.cohort_timing)
            except Exception:  # noqa: BLE001 - out of memory or any failure: these cells go one by one
                self._free()
                self.cohort_timing.fallbacks += 1
                values = None
            if values is None:
                continue
            share = (time.perf_counter() - start) / len(part)
            for (row, _), value in zip(part, values):
                given[row] = {"gradsign": value}
                shares[row] = share
        return given, shares


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    if not isinstance(exc, ValueError):
        text += " | " + " | ".join(line.strip() for line in traceback.format_exception(exc)[-3:-1] if line.strip())
    return text
