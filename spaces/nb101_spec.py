"""NAS-Bench-101 cells: the spec (adjacency + ops), pruning, validity, the official graph hash, the
first-seen representative of a graph, and the readable arch string.

A spec is a V x V 0/1 adjacency matrix, strictly upper-triangular (edge i -> j only for i < j), and V
op labels: ``input`` first, ``output`` last, interior vertices one of ``OPS``. Pruning (as the official
``ModelSpec``) removes every vertex that is not on some input -> output path, with its row, column and
op; a spec whose input cannot reach its output is invalid. Validity is checked after pruning:
2 <= V <= 7 vertices, at most 9 edges. Unknown op names are rejected wherever they occur (also on a
vertex that pruning would remove): a typo is an error, not a silent prune.

The graph hash (what every published NB101 table is keyed by) is the official algorithm on the pruned
spec: labels input -1, output -2, interior ops their index in ``OPS``; each vertex starts as the md5 of
the text of (out-degree, in-degree, label); then V rounds, each replacing every vertex's hash at once by
md5(sorted in-neighbour hashes joined + "|" + sorted out-neighbour hashes joined + "|" + own hash); the
graph hash is the md5 of the text of the sorted list of vertex hashes.

The representative of a graph is the spec the official generator (``scripts/generate_graphs.py``)
meets first among all specs of that graph: generation runs over V ascending, then the adjacency bitmask
ascending (bit ``x + y*(y-1)/2`` is the edge x -> y), then the interior labels in ``itertools.product``
order (first interior vertex most significant). It is found here without the table, by trying every
relabelling of the interior vertices (at most 5! = 120). The official generator verified that for this
space equal hashes mean isomorphic graphs, so the representative is also the first spec per hash.

Arch string (``format_arch`` / ``parse_arch``): the vertices 1..V-1 in order, separated by ``|``, each
``op~a,b,...`` with the op's short name and the vertices it reads from (all smaller; vertex 0 is the
input), e.g. the notebook's Inception-like cell
``conv3x3~0|conv1x1~0|maxpool3x3~0|conv3x3~0|conv3x3~4|output~1,2,3,5``. Long op names are accepted on
input. ``parse_arch(format_arch(spec)) == spec`` for every pruned spec.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

INPUT, OUTPUT = "input", "output"
OPS: tuple[str, ...] = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")  # official label order 0, 1, 2
SHORT: dict[str, str] = {"conv3x3-bn-relu": "conv3x3", "conv1x1-bn-relu": "conv1x1", "maxpool3x3": "maxpool3x3"}
_LONG = {short: long for long, short in SHORT.items()}
MAX_VERTICES = 7
MAX_EDGES = 9
LABEL_INPUT, LABEL_OUTPUT = -1, -2


class SpecError(ValueError):
    """A matrix/ops pair or an arch string that is not a valid NAS-Bench-101 cell; the message says why."""


def _label(op: str) -> int:
    return OPS.index(op)


@dataclass(frozen=True)
class Spec:
    """A pruned, valid NB101 cell. Invariants: ``matrix`` is V x V 0/1 strictly upper-triangular with
    2 <= V <= 7 and at most 9 edges, every vertex lies on an input -> output path, ``ops[0] == 'input'``,
    ``ops[-1] == 'output'`` and every interior op is in ``OPS``. Build one with ``Spec.from_matrix``."""

    matrix: tuple[tuple[int, ...], ...]
    ops: tuple[str, ...]

    @classmethod
    def from_matrix(cls, matrix, ops: Sequence[str]) -> "Spec":
        """Check, prune and validate ``(matrix, ops)``; one SpecError naming the first problem."""
        try:
            arr = np.asarray(matrix)
        except Exception as exc:  # ragged nested lists
            raise SpecError(f"adjacency matrix is not a rectangular array: {exc}") from None
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
            raise SpecError(f"adjacency matrix must be square, got shape {arr.shape}")
        if arr.dtype == bool:
            arr = arr.astype(np.int64)
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise SpecError(f"adjacency matrix entries must be 0 or 1, got dtype {arr.dtype}")
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise SpecError("adjacency matrix entries must be 0 or 1, "
                            f"got {sorted(set(arr.ravel().tolist()) - {0, 1})[:3]}")
        arr = arr.astype(np.int64)
        v = arr.shape[0]
        if isinstance(ops, str) or not isinstance(ops, Sequence):
            raise SpecError(f"ops must be a list of op names, got {type(ops).__name__}")
        ops = [str(op) for op in ops]
        if len(ops) != v:
            raise SpecError(f"op count {len(ops)} != {v} vertices of the adjacency matrix")
        if v < 2:
            raise SpecError(f"a cell needs at least 2 vertices (input and output), got {v}")
        if np.tril(arr).any():
            i, j = map(int, np.argwhere(np.tril(arr))[0])
            raise SpecError(f"adjacency matrix must be strictly upper-triangular (a DAG in vertex order); "
                            f"entry [{i}][{j}] is set")
        if ops[0] != INPUT:
            raise SpecError(f"the first op must be 'input', got {ops[0]!r}")
        if ops[-1] != OUTPUT:
            raise SpecError(f"the last op must be 'output', got {ops[-1]!r}")
        for k, op in enumerate(ops[1:-1], start=1):
            if op not in OPS:
                raise SpecError(f"unknown op {op!r} at vertex {k}; valid interior ops: {', '.join(OPS)}")
        keep = _on_path(arr)
        if not keep[0] or not keep[-1]:
            raise SpecError("input is not connected to output (no input -> output path)")
        idx = np.flatnonzero(keep)
        pruned = arr[np.ix_(idx, idx)]
        kept_ops = [ops[i] for i in idx]
        if len(idx) > MAX_VERTICES:
            raise SpecError(f"too many vertices: {len(idx)} after pruning (at most {MAX_VERTICES})")
        edges = int(pruned.sum())
        if edges > MAX_EDGES:
            raise SpecError(f"too many edges: {edges} after pruning (at most {MAX_EDGES})")
        return cls(tuple(tuple(int(x) for x in row) for row in pruned), tuple(kept_ops))

    @property
    def num_vertices(self) -> int:
        return len(self.ops)

    @property
    def labels(self) -> tuple[int, ...]:
        """Official integer labels: input -1, interior op index in ``OPS``, output -2."""
        return (LABEL_INPUT, *(_label(op) for op in self.ops[1:-1]), LABEL_OUTPUT)

    def hash(self) -> str:
        """The official NB101 graph hash of this (pruned) spec."""
        return graph_hash(self.matrix, self.labels)

    def representative(self) -> "Spec":
        """The spec of this graph that the official generator meets first (see module docstring)."""
        v, bits, code = first_seen(self.matrix, self.labels)
        return spec_from_code(v, bits, code)

    def __str__(self) -> str:
        return format_arch(self)


def _on_path(arr: np.ndarray) -> np.ndarray:
    """Vertices reachable from vertex 0 and reaching vertex V-1 (arr strictly upper-triangular)."""
    v = arr.shape[0]
    from_input = np.zeros(v, bool)
    from_input[0] = True
    for j in range(1, v):
        from_input[j] = bool((arr[:j, j].astype(bool) & from_input[:j]).any())
    to_output = np.zeros(v, bool)
    to_output[v - 1] = True
    for i in range(v - 2, -1, -1):
        to_output[i] = bool((arr[i, i + 1:].astype(bool) & to_output[i + 1:]).any())
    return from_input & to_output


# ---------------------------------------------------------------------------------------------------
# The official graph hash, one graph at a time (the enumeration has a vectorised version that is
# checked against this one).


def graph_hash(matrix: Sequence[Sequence[int]], labels: Sequence[int]) -> str:
    """Official NB101 hash of a (pruned) adjacency matrix and integer labels (input -1, output -2)."""
    v = len(labels)
    ins = [[w for w in range(v) if matrix[w][u]] for u in range(v)]
    outs = [[w for w in range(v) if matrix[u][w]] for u in range(v)]
    md5 = hashlib.md5
    hashes = [md5(str((len(outs[u]), len(ins[u]), int(labels[u]))).encode()).hexdigest() for u in range(v)]
    for _ in range(v):
        hashes = [md5(("".join(sorted(hashes[w] for w in ins[u])) + "|"
                       + "".join(sorted(hashes[w] for w in outs[u])) + "|" + hashes[u]).encode()).hexdigest()
                  for u in range(v)]
    return md5(str(sorted(hashes)).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Generation order: (V, adjacency bitmask, labelling code) as the official generator runs them.


def bit_index(x: int, y: int) -> int:
    """Bit of the official bitmask that holds the edge x -> y (x < y): column-major upper triangle."""
    return x + y * (y - 1) // 2


def matrix_bits(matrix: Sequence[Sequence[int]]) -> int:
    v = len(matrix)
    return sum(1 << bit_index(x, y) for y in range(1, v) for x in range(y) if matrix[x][y])


def matrix_from_bits(v: int, bits: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(x < y and (bits >> bit_index(x, y)) & 1) for y in range(v)) for x in range(v))


def label_code(labels: Sequence[int]) -> int:
    """Position of the interior labelling in ``itertools.product`` order (first interior most significant)."""
    code = 0
    for label in labels[1:-1]:
        code = code * len(OPS) + int(label)
    return code


def labels_from_code(v: int, code: int) -> tuple[int, ...]:
    interior = []
    for _ in range(v - 2):
        code, digit = divmod(code, len(OPS))
        interior.append(digit)
    return (LABEL_INPUT, *reversed(interior), LABEL_OUTPUT)


def spec_from_code(v: int, bits: int, code: int) -> Spec:
    """The spec with V vertices, adjacency bitmask ``bits`` and labelling ``code`` (assumed valid)."""
    labels = labels_from_code(int(v), int(code))
    ops = (INPUT, *(OPS[label] for label in labels[1:-1]), OUTPUT)
    return Spec(matrix_from_bits(int(v), int(bits)), ops)


@lru_cache(maxsize=None)
def interior_perms(v: int) -> np.ndarray:
    """All relabellings that fix input (0) and output (v-1): array (k, v), row p maps old vertex u to p[u]."""
    rows = [(0, *perm, v - 1) for perm in itertools.permutations(range(1, v - 1))] if v > 2 else [(0, 1)]
    return np.asarray(rows, dtype=np.int64)


def first_seen(matrix: Sequence[Sequence[int]], labels: Sequence[int]) -> tuple[int, int, int]:
    """(V, bits, label code) of the first spec in generation order isomorphic to (matrix, labels)."""
    arr = np.asarray(matrix, dtype=np.int64)
    v = arr.shape[0]
    lab = np.asarray(labels, dtype=np.int64)
    best: tuple[int, int] | None = None
    for perm in interior_perms(v):
        inv = np.argsort(perm)  # new vertex i is old vertex inv[i]
        permuted = arr[np.ix_(inv, inv)]
        if np.tril(permuted).any():
            continue  # not upper-triangular: the generator never produces this vertex order
        key = (matrix_bits(permuted), label_code(lab[inv]))
        if best is None or key < best:
            best = key
    assert best is not None  # the identity is always upper-triangular
    return v, best[0], best[1]


# ---------------------------------------------------------------------------------------------------
# Arch strings.

_TOKEN_RE = re.compile(r"^([a-z0-9-]+)~(\d+(?:,\d+)*)$")


def format_arch(spec: Spec) -> str:
    """``op~sources|...`` for vertices 1..V-1 (see module docstring)."""
    parts = []
    for j in range(1, spec.num_vertices):
        sources = ",".join(str(i) for i in range(j) if spec.matrix[i][j])
        op = spec.ops[j]
        parts.append(f"{SHORT.get(op, op)}~{sources}")
    return "|".join(parts)


def parse_arch(arch: str) -> Spec:
    """The pruned spec of an arch string; one SpecError naming the first problem."""
    if not isinstance(arch, str):
        raise SpecError(f"an NB101 arch string must be a str, got {type(arch).__name__}")
    text = arch.strip()
    if not text:
        raise SpecError("empty NB101 arch string")
    tokens = text.split("|")
    v = len(tokens) + 1
    matrix = [[0] * v for _ in range(v)]
    ops = [INPUT]
    for j, token in enumerate(tokens, start=1):
        match = _TOKEN_RE.match(token.strip())
        if not match:
            raise SpecError(f"malformed NB101 arch {arch!r}: vertex {j} token {token!r} is not 'op~src,src,...'")
        name, sources = match.group(1), match.group(2)
        op = _LONG.get(name, name)
        if j < v - 1 and op not in OPS:
            raise SpecError(f"malformed NB101 arch {arch!r}: unknown op {name!r} at vertex {j}; valid ops: "
                            f"{', '.join(SHORT.values())} (or {', '.join(OPS)})")
        if j == v - 1 and op != OUTPUT:
            raise SpecError(f"malformed NB101 arch {arch!r}: the last vertex must be 'output', got {name!r}")
        ops.append(op)
        for src in (int(s) for s in sources.split(",")):
            if src >= j:
                raise SpecError(f"malformed NB101 arch {arch!r}: vertex {j} reads from vertex {src}; "
                                "inputs must come from earlier vertices")
            if matrix[src][j]:
                raise SpecError(f"malformed NB101 arch {arch!r}: vertex {j} lists input {src} twice")
            matrix[src][j] = 1
    return Spec.from_matrix(matrix, ops)


def as_spec(arch) -> Spec:
    """A Spec from an arch string, a Spec, or a ``(matrix, ops)`` pair / ``{"matrix", "ops"}`` mapping."""
    if isinstance(arch, Spec):
        return arch
    if isinstance(arch, str):
        return parse_arch(arch)
    if isinstance(arch, dict):
        if "matrix" not in arch or "ops" not in arch:
            raise SpecError(f"an NB101 record needs 'matrix' and 'ops' (or 'arch'); it has {sorted(arch)}")
        return Spec.from_matrix(arch["matrix"], arch["ops"])
    if isinstance(arch, (tuple, list)) and len(arch) == 2:
        return Spec.from_matrix(arch[0], arch[1])
    raise SpecError(f"cannot read an NB101 cell from {type(arch).__name__}")
