"""The whole NAS-Bench-101 space without TensorFlow: every unique graph, its official hash, its order.

``enumerate_graphs()`` returns a ``GraphTable`` of the 423,624 graphs in canonical order (``arch_id``):
**ascending official hash**, i.e. the key order of the official generator's output file
(``generate_graphs.py`` writes its JSON with sorted keys) and so the index zero-cost-nas's NB101 script
used. Each graph is stored as its representative: the spec the official generator meets first
(``nb101_spec.first_seen``), as (V, adjacency bitmask, labelling code).

How it is fast (the official pure-Python generator hashes all 1,293,208 labelled graphs; 825 s on one
core here):
1. The full-DAG adjacency matrices with <= 9 edges are found with bit arithmetic over all bitmasks.
2. Isomorphism classes of labelled graphs come from a canonical form instead of hashing: each matrix's
   minimum code over the relabellings of its interior vertices, then per labelling the minimum label code
   over the relabellings that reach that minimum (its automorphisms). The first labelled graph of each
   class in generation order is its representative.
3. Only the representatives are hashed, with the official algorithm vectorised over all graphs of a size:
   per round, identical (own, sorted in-, sorted out-neighbour) hash tuples are found with numpy and md5 is
   computed once per distinct tuple.
The result is checked, not assumed: the number of distinct hashes must equal the number of classes
(the official generator verified that hash classes are isomorphism classes for this space), the per-size
counts must be the published ones, and a sample of hashes is recomputed with ``nb101_spec.graph_hash``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .nb101_spec import (LABEL_INPUT, LABEL_OUTPUT, MAX_EDGES, MAX_VERTICES, OPS, bit_index, graph_hash,
                         interior_perms, labels_from_code, matrix_from_bits)

SIZE = 423_624
COUNTS_BY_VERTICES = {2: 1, 3: 6, 4: 84, 5: 2_441, 6: 62_010, 7: 359_082}
LABELLED_GRAPHS = 1_293_208
# sha256 of the table's columns in arch_id order (``GraphTable.checksum``), as ``enumerate_graphs``
# produces it; the enumeration test recomputes it, and a cached copy must match it.
CHECKSUM = "3577492e02732e31c98c62bf2979d3c7f366f709aeb8cc377588ab9ab186d268"


class EnumerationError(RuntimeError):
    """The enumeration did not reproduce the official space (a bug, never bad input)."""


@dataclass(frozen=True)
class GraphTable:
    """The space in canonical order. Invariants: ``hashes`` ('S32' ascii hex) strictly ascending; row i
    (arch_id i) is the graph with representative (``vertices[i]``, ``bits[i]``, ``labels[i]``)."""

    hashes: np.ndarray  # (n,) S32
    vertices: np.ndarray  # (n,) int8
    bits: np.ndarray  # (n,) int32, official adjacency bitmask
    labels: np.ndarray  # (n,) int16, labelling code (itertools.product position)

    def __len__(self) -> int:
        return int(self.hashes.shape[0])

    def index_of(self, hash_: str) -> int | None:
        """arch_id of the graph with this hash, or None."""
        key = np.bytes_(hash_.encode() if isinstance(hash_, str) else hash_)
        i = int(np.searchsorted(self.hashes, key))
        return i if i < len(self) and self.hashes[i] == key else None

    def checksum(self) -> str:
        """sha256 over every column in arch_id order: what a cached copy is validated against."""
        digest = hashlib.sha256()
        for column in (self.hashes, self.vertices.astype("<i1"), self.bits.astype("<i4"), self.labels.astype("<i2")):
            digest.update(np.ascontiguousarray(column).tobytes())
        return digest.hexdigest()

    def validate(self) -> None:
        """Raise EnumerationError unless this is the whole official space, well formed."""
        n = len(self)
        if n != SIZE:
            raise EnumerationError(f"{n} graphs, expected {SIZE}")
        if not all(c.shape == (n,) for c in (self.vertices, self.bits, self.labels)):
            raise EnumerationError("columns of different lengths")
        if self.hashes.dtype != np.dtype("S32") or not (self.hashes[1:] > self.hashes[:-1]).all():
            raise EnumerationError("hashes are not 32-character and strictly ascending")
        counts = dict(zip(*np.unique(self.vertices, return_counts=True)))
        if {int(k): int(v) for k, v in counts.items()} != COUNTS_BY_VERTICES:
            raise EnumerationError(f"graphs per vertex count {counts} != {COUNTS_BY_VERTICES}")
        if self.checksum() != CHECKSUM:
            raise EnumerationError(f"table checksum {self.checksum()} != {CHECKSUM}")


# ---------------------------------------------------------------------------------------------------
# 1. Matrices.


def full_dag_bits(v: int) -> np.ndarray:
    """Ascending bitmasks of the V x V full DAGs (only vertex 0 without in-edges, only V-1 without
    out-edges) with at most MAX_EDGES edges: the matrices the official generator keeps."""
    n = v * (v - 1) // 2
    bits = np.arange(2 ** n, dtype=np.int64)
    ok = np.ones(bits.shape, bool)
    for i in range(v - 1):  # every row but the last has an out-edge
        ok &= (bits & sum(1 << bit_index(i, j) for j in range(i + 1, v))) != 0
    for j in range(1, v):  # every column but the first has an in-edge
        ok &= (bits & sum(1 << bit_index(i, j) for i in range(j))) != 0
    edges = np.zeros(bits.shape, np.int64)
    for k in range(n):
        edges += (bits >> k) & 1
    return bits[ok & (edges <= MAX_EDGES)]


def _matrices(v: int, bits: np.ndarray) -> np.ndarray:
    """(K, V, V) uint8 adjacency matrices of the bitmasks."""
    out = np.zeros((bits.shape[0], v, v), np.uint8)
    for y in range(1, v):
        for x in range(y):
            out[:, x, y] = (bits >> bit_index(x, y)) & 1
    return out


# ---------------------------------------------------------------------------------------------------
# 2. Isomorphism classes and their first-seen representatives.


def _representatives(v: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(bits, label codes) of the first labelled graph of every isomorphism class with V vertices, in
    generation order, and how many labelled graphs were generated."""
    bits = full_dag_bits(v)
    mats = _matrices(v, bits)
    perms = interior_perms(v)
    invs = np.argsort(perms, axis=1)
    weights = (np.int64(1) << np.arange(v * v, dtype=np.int64)).reshape(v, v)
    # codes[k, p]: the matrix relabelled by perm p, read as a V*V-bit number
    codes = np.stack([(mats[:, inv][:, :, inv].astype(np.int64) * weights).sum(axis=(1, 2)) for inv in invs], 1)
    best = codes.min(axis=1)
    n_lab = len(OPS) ** (v - 2)
    grid = (np.array(np.unravel_index(np.arange(n_lab), (len(OPS),) * (v - 2))).T.reshape(n_lab, v - 2)
            if v > 2 else np.zeros((1, 0), np.int64))
    full = np.concatenate([np.full((n_lab, 1), 0), grid, np.full((n_lab, 1), 0)], axis=1)  # ends unused
    place = len(OPS) ** np.arange(v - 3, -1, -1, dtype=np.int64)  # first interior most significant
    keys = np.empty((bits.shape[0], n_lab), np.int64)
    for k in range(bits.shape[0]):
        autos = invs[codes[k] == best[k]]  # relabellings reaching the canonical matrix
        relabelled = full[:, autos][:, :, 1:-1]  # (n_lab, |autos|, V-2): new vertex i gets old label inv[i]
        lab_min = (relabelled * place).sum(axis=2).min(axis=1) if v > 2 else np.zeros(n_lab, np.int64)
        keys[k] = best[k] * n_lab + lab_min  # best < 2**49, n_lab <= 243: fits int64
    flat = keys.ravel()  # generation order: bits ascending, then labelling code ascending
    _, first = np.unique(flat, return_index=True)
    first.sort()
    return bits[first // n_lab], (first % n_lab).astype(np.int64), flat.shape[0]


# ---------------------------------------------------------------------------------------------------
# 3. The official hash, vectorised over graphs of one size.


_CHUNK = 65_536  # messages built per batch: bounds memory (a message is at most 226 bytes)
_SEP = ord("|")
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _md5_rows(messages: np.ndarray) -> np.ndarray:
    """md5 digests (M, 16) uint8 of every row of a (M, L) uint8 array (each row one message)."""
    out = np.empty((messages.shape[0], 16), np.uint8)
    md5 = hashlib.md5
    for lo in range(0, messages.shape[0], _CHUNK):
        blobs = np.ascontiguousarray(messages[lo:lo + _CHUNK]).view(f"S{messages.shape[1]}").ravel().tolist()
        out[lo:lo + len(blobs)] = np.frombuffer(b"".join([md5(b).digest() for b in blobs]), np.uint8).reshape(-1, 16)
    return out


def _hex(digests: np.ndarray) -> np.ndarray:
    """(M, 16) digests -> (M, 32) uint8 lowercase hex text (what ``hexdigest`` gives)."""
    out = np.empty((digests.shape[0], 32), np.uint8)
    out[:, 0::2] = _HEX[digests >> 4]
    out[:, 1::2] = _HEX[digests & 15]
    return out


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of one row per distinct row, inverse) of an int (M, C) array, via a 64-bit fingerprint
    that is checked exactly (a fingerprint collision falls back to numpy's exact unique)."""
    rng = np.random.default_rng(12345)
    mult = rng.integers(1, 2**63, size=rows.shape[1], dtype=np.uint64) | np.uint64(1)
    fp = np.zeros(rows.shape[0], np.uint64)
    with np.errstate(over="ignore"):
        for c in range(rows.shape[1]):
            fp = (fp ^ (rows[:, c].astype(np.uint64) * mult[c])) * np.uint64(0x9E3779B97F4A7C15)
            fp ^= fp >> np.uint64(29)
    _, index, inverse = np.unique(fp, return_index=True, return_inverse=True)
    if not np.array_equal(rows[index[inverse]], rows):
        _, index, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    return index, inverse.ravel()


def _rank(digests: np.ndarray, inverse: np.ndarray, n: int, v: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertex ids (n, v) whose order is the order of the hex texts, and the (K, 32) hex table.

    ``digests[k]`` is the digest of distinct row k, ``inverse`` maps every vertex to its row. Hex text
    preserves the byte order of equal-length digests, so digests are ranked as two big-endian uint64.
    """
    hi0 = digests[:, :8].copy().view(">u8").ravel().astype(np.uint64)  # native order: fast compares
    lo0 = digests[:, 8:].copy().view(">u8").ravel().astype(np.uint64)
    order = np.argsort(hi0, kind="stable")
    if (np.diff(hi0[order]) == 0).any():  # equal first halves (equal digests, or a 2**-64 tie)
        order = np.lexsort((lo0, hi0))
    hi, lo = hi0[order], lo0[order]
    new = np.ones(order.shape[0], bool)
    new[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    rank = np.empty(order.shape[0], np.int32)
    rank[order] = np.cumsum(new) - 1
    return rank[inverse].reshape(n, v), _hex(digests[order[new]])


def _messages(part: np.ndarray, a: int, b: int, v: int, hexbytes: np.ndarray) -> np.ndarray:
    """md5 inputs of one round for rows (a in-ids from column 0, b out-ids from column v, own id at
    column 2v): in-neighbour hashes joined + "|" + out-neighbour hashes joined + "|" + own hash."""
    msg = np.empty((part.shape[0], 32 * (a + b + 1) + 2), np.uint8)
    pos = 0
    for c in range(a):
        msg[:, pos:pos + 32] = hexbytes[part[:, c]]
        pos += 32
    msg[:, pos] = _SEP
    pos += 1
    for c in range(b):
        msg[:, pos:pos + 32] = hexbytes[part[:, v + c]]
        pos += 32
    msg[:, pos] = _SEP
    msg[:, pos + 1:] = hexbytes[part[:, 2 * v]]
    return msg


def hash_graphs(v: int, bits: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Official hashes ('S32' hex) of the graphs (V, bits[i], codes[i]), all with V vertices."""
    n = bits.shape[0]
    adj = _matrices(v, np.asarray(bits, np.int64)).astype(bool)  # adj[g, src, dst]
    place = len(OPS) ** np.arange(v - 3, -1, -1, dtype=np.int64)
    labels = np.empty((n, v), np.int64)
    labels[:, 0], labels[:, -1] = LABEL_INPUT, LABEL_OUTPUT
    labels[:, 1:-1] = (np.asarray(codes, np.int64)[:, None] // place) % len(OPS)
    # round 0: md5 of the text of (out-degree, in-degree, label)
    start = np.stack([adj.sum(axis=2), adj.sum(axis=1), labels], axis=2).reshape(-1, 3)
    index, inverse = _unique_rows(start)
    first = [hashlib.md5(str(tuple(int(x) for x in start[i])).encode()).digest() for i in index]
    ids, table = _rank(np.frombuffer(b"".join(first), np.uint8).reshape(-1, 16), inverse, n, v)
    in_mask = np.transpose(adj, (0, 2, 1))  # in_mask[g, u, w]: edge w -> u
    for _ in range(v):
        big = np.int32(table.shape[0])  # sorts after every real id
        nbr = np.broadcast_to(ids[:, None, :], (n, v, v))
        rows = np.concatenate([np.sort(np.where(in_mask, nbr, big), axis=2),
                               np.sort(np.where(adj, nbr, big), axis=2), ids[:, :, None]], axis=2)
        index, inverse = _unique_rows(rows.reshape(n * v, 2 * v + 1))
        uniq = rows.reshape(n * v, 2 * v + 1)[index]
        del rows
        n_in = (uniq[:, :v] != big).sum(axis=1)
        n_out = (uniq[:, v:2 * v] != big).sum(axis=1)
        digests = np.empty((uniq.shape[0], 16), np.uint8)
        for a, b in sorted(set(zip(n_in.tolist(), n_out.tolist()))):
            group = np.flatnonzero((n_in == a) & (n_out == b))
            for lo in range(0, group.shape[0], _CHUNK):
                sel = group[lo:lo + _CHUNK]
                digests[sel] = _md5_rows(_messages(uniq[sel], a, b, v, table))
        ids, table = _rank(digests, inverse, n, v)
    # final: md5 of str(sorted(hashes)), i.e. "['h1', 'h2', ...]" (ids sort as the hex texts do)
    final = np.sort(ids, axis=1)
    item = 36  # "'" + 32 hex + "'" + ", "
    msg = np.empty((n, item * v), np.uint8)
    msg[:, 0] = ord("[")
    for c in range(v):
        base = 1 + c * item
        msg[:, base] = ord("'")
        msg[:, base + 1:base + 33] = table[final[:, c]]
        msg[:, base + 33] = ord("'")
        if c < v - 1:
            msg[:, base + 34] = ord(",")
            msg[:, base + 35] = ord(" ")
    msg[:, -1] = ord("]")  # the last item has no ", ": its slot ends at the closing bracket
    return _hex(_md5_rows(msg)).view("S32").ravel()


# ---------------------------------------------------------------------------------------------------


def enumerate_graphs(check_sample: int = 2000) -> GraphTable:
    """Every unique NB101 graph in canonical (ascending hash) order; validated (see module docstring).

    ``check_sample`` graphs (spread over the table) are re-hashed one by one with the scalar
    ``graph_hash`` as a cross-check of the vectorised hash; 0 skips that.
    """
    hashes, vertices, bits_out, labels_out = [], [], [], []
    labelled = 0
    for v in range(2, MAX_VERTICES + 1):
        bits, codes, generated = _representatives(v)
        labelled += generated
        if bits.shape[0] != COUNTS_BY_VERTICES[v]:
            raise EnumerationError(f"{bits.shape[0]} graphs with {v} vertices, expected {COUNTS_BY_VERTICES[v]}")
        hashes.append(hash_graphs(v, bits, codes))
        vertices.append(np.full(bits.shape[0], v, np.int8))
        bits_out.append(bits.astype(np.int32))
        labels_out.append(codes.astype(np.int16))
    if labelled != LABELLED_GRAPHS:
        raise EnumerationError(f"{labelled} labelled graphs generated, expected {LABELLED_GRAPHS}")
    all_hashes = np.concatenate(hashes)
    order = np.argsort(all_hashes, kind="stable")
    table = GraphTable(all_hashes[order], np.concatenate(vertices)[order], np.concatenate(bits_out)[order],
                       np.concatenate(labels_out)[order])
    if np.unique(table.hashes).shape[0] != SIZE:
        raise EnumerationError("two non-isomorphic graphs share a hash (the official generator says none do)")
    table.validate()
    if check_sample:
        for i in np.linspace(0, SIZE - 1, num=min(check_sample, SIZE)).astype(np.int64):
            v = int(table.vertices[i])
            got = graph_hash(matrix_from_bits(v, int(table.bits[i])), labels_from_code(v, int(table.labels[i])))
            if got.encode() != table.hashes[i]:
                raise EnumerationError(f"vectorised hash of arch_id {i} disagrees with the scalar hash")
    return table


__all__ = ["CHECKSUM", "COUNTS_BY_VERTICES", "EnumerationError", "GraphTable", "LABELLED_GRAPHS", "SIZE",
           "enumerate_graphs", "full_dag_bits", "hash_graphs", "LABEL_INPUT", "LABEL_OUTPUT"]
