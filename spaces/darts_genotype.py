"""A DARTS-style genotype: two cells (normal, reduce), each a list of intermediate nodes (pure, no torch).

A cell has ``n`` intermediate nodes; node ``j`` (0-based) sums two ops, each applied to one earlier state:
states 0 and 1 are the outputs of the two previous cells, state ``2 + i`` is intermediate node ``i``, so
node ``j`` takes inputs in ``[0, 2 + j)``. The cell output concatenates the states in ``concat``
(intermediate nodes only, ascending, no repeats). This is the ``Genotype(normal, normal_concat, reduce,
reduce_concat)`` of the DARTS code, where ``normal``/``reduce`` list the ``(op, input)`` pairs two per node.

Invariants (``Rules`` says which apply to a space; every violation is a ``GenotypeError`` naming it):
- every node has exactly two ``(op, input)`` pairs, each op in the space's op set, each input in range;
- ``distinct_inputs``: the two inputs of a node differ (DARTS / NAS-Bench-301: a node's two edges come
  from two different states; the NDS spaces allow one state twice, e.g. the PNAS genotype);
- ``concat``: ``"all"`` (every intermediate node, DARTS/PNAS) or ``"given"`` (any non-empty ascending set
  of intermediate nodes, as the file says: NASNet, Amoeba, ENAS keep their "loose ends").

Canonical form: within a node the two pairs are sorted by (input, op name), so one cell written with a
node's pairs in either order is one genotype. The arch string, which round-trips exactly:

    normal=op~i+op~i|op~i+op~i|...@2,3,4,5;reduce=op~i+op~i|...@2,3,4,5

(``|`` between nodes, ``+`` between a node's two pairs, ``@`` the concat list). ``text()`` gives the DARTS
``Genotype(...)`` form that DARTS-family training scripts evaluate, and ``parse_genotype_text`` reads it
back (literals and ``range(a, b)`` only; nothing is evaluated).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

Pair = tuple[str, int]
Node = tuple[Pair, Pair]


class GenotypeError(ValueError):
    """A genotype, arch string or record that is not a cell of the space; the message says what is wrong."""


@dataclass(frozen=True)
class Rules:
    """What a space allows: its op set (in index order), nodes per cell, input and concat rules."""

    ops: tuple[str, ...]
    nodes: int
    distinct_inputs: bool = False
    concat: str = "all"  # "all" | "given"

    def __post_init__(self) -> None:
        if self.concat not in ("all", "given"):
            raise ValueError(f"Rules.concat must be 'all' or 'given', got {self.concat!r}")
        if len(set(self.ops)) != len(self.ops) or not self.ops:
            raise ValueError(f"Rules.ops must be non-empty and distinct, got {self.ops}")

    def default_concat(self) -> tuple[int, ...]:
        return tuple(range(2, 2 + self.nodes))


@dataclass(frozen=True)
class Cell:
    """One cell in canonical form (see the module docstring). Build it with ``Cell.make``."""

    nodes: tuple[Node, ...]
    concat: tuple[int, ...]

    @classmethod
    def make(cls, pairs: Sequence, concat: Iterable[int] | None, rules: Rules, what: str = "cell") -> "Cell":
        """Validate flat ``[op, input]`` pairs (two per node, DARTS order) and ``concat``; canonicalise."""
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
            raise GenotypeError(f"{what}: expected a list of [op, input] pairs, got {type(pairs).__name__}")
        if len(pairs) != 2 * rules.nodes:
            raise GenotypeError(f"{what}: expected {2 * rules.nodes} [op, input] pairs ({rules.nodes} nodes, two "
                                f"each), got {len(pairs)}")
        flat: list[Pair] = []
        for k, pair in enumerate(pairs):
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise GenotypeError(f"{what}: pair {k} must be [op, input], got {pair!r}")
            op, src = pair
            if not isinstance(op, str) or op not in rules.ops:
                raise GenotypeError(f"{what}: pair {k}: unknown op {op!r}; valid ops: {', '.join(rules.ops)}")
            if isinstance(src, bool) or not isinstance(src, int):
                raise GenotypeError(f"{what}: pair {k}: input must be an int, got {src!r}")
            node = k // 2
            if not 0 <= src < 2 + node:
                raise GenotypeError(f"{what}: node {node} (pair {k}) input {src} out of range [0, {2 + node})")
            flat.append((op, int(src)))
        nodes = []
        for j in range(rules.nodes):
            a, b = flat[2 * j], flat[2 * j + 1]
            if rules.distinct_inputs and a[1] == b[1]:
                raise GenotypeError(f"{what}: node {j} takes input {a[1]} twice; this space needs two distinct inputs")
            nodes.append(tuple(sorted((a, b), key=lambda p: (p[1], p[0]))))
        return cls(tuple(nodes), _concat(concat, rules, what))

    @property
    def pairs(self) -> list[Pair]:
        return [p for node in self.nodes for p in node]

    def to_text(self) -> str:
        body = "|".join("+".join(f"{op}~{src}" for op, src in node) for node in self.nodes)
        return body + "@" + ",".join(str(c) for c in self.concat)


def _concat(concat: Iterable[int] | None, rules: Rules, what: str) -> tuple[int, ...]:
    full = rules.default_concat()
    if concat is None:
        if rules.concat == "given":
            raise GenotypeError(f"{what}: this space needs the concat list (which nodes the cell outputs)")
        return full
    try:
        values = [int(c) for c in concat]
        if any(isinstance(c, bool) or int(c) != c for c in concat):
            raise TypeError
    except (TypeError, ValueError):
        raise GenotypeError(f"{what}: concat must be a list of ints, got {concat!r}") from None
    if rules.concat == "all":
        if tuple(values) != full:
            raise GenotypeError(f"{what}: concat must be {list(full)} (all intermediate nodes) in this space, "
                                f"got {values}")
        return full
    if not values or sorted(set(values)) != values:
        raise GenotypeError(f"{what}: concat must be non-empty, ascending, without repeats, got {values}")
    if values[0] < 2 or values[-1] >= 2 + rules.nodes:
        raise GenotypeError(f"{what}: concat {values} must name intermediate nodes in [2, {2 + rules.nodes})")
    return tuple(values)


@dataclass(frozen=True)
class Genotype:
    """A normal and a reduction cell under one set of ``Rules``; canonical by construction."""

    normal: Cell
    reduce: Cell

    @classmethod
    def make(cls, normal, reduce, rules: Rules, normal_concat=None, reduce_concat=None) -> "Genotype":
        return cls(Cell.make(normal, normal_concat, rules, "normal"), Cell.make(reduce, reduce_concat, rules, "reduce"))

    @classmethod
    def from_record(cls, record: Mapping, rules: Rules) -> "Genotype":
        """From ``{"normal", "reduce"}`` plus optional ``normal_concat``/``reduce_concat`` (or one
        ``concat`` for both, as the NAS-Bench-301 table has)."""
        if not isinstance(record, Mapping):
            raise GenotypeError(f"a genotype record must be a mapping, got {type(record).__name__}")
        missing = [f for f in ("normal", "reduce") if f not in record]
        if missing:
            raise GenotypeError(f"genotype record lacks {missing} (fields: {sorted(record)})")
        shared = record.get("concat")
        return cls.make(record["normal"], record["reduce"], rules,
                        record.get("normal_concat", shared), record.get("reduce_concat", shared))

    @classmethod
    def parse(cls, arch: str, rules: Rules) -> "Genotype":
        """Read an arch string (``normal=...;reduce=...``) or the DARTS ``Genotype(...)`` text."""
        if not isinstance(arch, str):
            raise GenotypeError(f"an arch string must be a str, got {type(arch).__name__}")
        text = arch.strip()
        if text.startswith("Genotype("):
            return cls.from_record(parse_genotype_text(text), rules)
        parts = dict(_split_field(p, arch) for p in text.split(";"))
        if sorted(parts) != ["normal", "reduce"]:
            raise GenotypeError(f"malformed arch {arch!r}: expected 'normal=...;reduce=...', "
                                f"got fields {sorted(parts)}")
        cells = {}
        for name, body in parts.items():
            nodes_text, at, concat_text = body.partition("@")
            if not at:
                raise GenotypeError(f"malformed arch {arch!r}: {name} cell lacks '@concat'")
            pairs = []
            for node in nodes_text.split("|"):
                edges = node.split("+")
                if len(edges) != 2:
                    raise GenotypeError(f"malformed arch {arch!r}: node {node!r} must be 'op~i+op~i'")
                for edge in edges:
                    op, tilde, src = edge.partition("~")
                    if not tilde or not src.isdigit():
                        raise GenotypeError(f"malformed arch {arch!r}: edge {edge!r} is not 'op~input'")
                    pairs.append((op, int(src)))
            try:
                concat = [int(c) for c in concat_text.split(",")]
            except ValueError:
                raise GenotypeError(f"malformed arch {arch!r}: concat {concat_text!r} is not a list of ints") from None
            cells[name] = (pairs, concat)
        return cls.make(cells["normal"][0], cells["reduce"][0], rules, cells["normal"][1], cells["reduce"][1])

    def to_text(self) -> str:
        """The arch string (canonical; ``Genotype.parse`` gives this genotype back)."""
        return f"normal={self.normal.to_text()};reduce={self.reduce.to_text()}"

    def darts_text(self) -> str:
        """The DARTS ``Genotype(normal=[...], normal_concat=[...], reduce=[...], reduce_concat=[...])`` text."""

        def pairs(cell: Cell) -> str:
            return "[" + ", ".join(f"({op!r}, {src})" for op, src in cell.pairs) + "]"

        return (f"Genotype(normal={pairs(self.normal)}, normal_concat={list(self.normal.concat)}, "
                f"reduce={pairs(self.reduce)}, reduce_concat={list(self.reduce.concat)})")

    def as_record(self) -> dict:
        return {"normal": [list(p) for p in self.normal.pairs], "normal_concat": list(self.normal.concat),
                "reduce": [list(p) for p in self.reduce.pairs], "reduce_concat": list(self.reduce.concat)}


def _split_field(part: str, arch: str) -> tuple[str, str]:
    name, eq, body = part.partition("=")
    if not eq:
        raise GenotypeError(f"malformed arch {arch!r}: field {part!r} is not 'name=value'")
    return name.strip(), body.strip()


def parse_genotype_text(text: str) -> dict:
    """The fields of a DARTS ``Genotype(...)`` text as a record; only literals and ``range(a, b)``."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise GenotypeError(f"not a Genotype(...) text: {exc.msg}") from None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "Genotype"):
        raise GenotypeError("not a Genotype(...) text")
    names = ["normal", "normal_concat", "reduce", "reduce_concat"]
    if tree.args and tree.keywords:
        raise GenotypeError("Genotype(...): give the fields all by position or all by name")
    items = list(zip(names, tree.args)) if tree.args else [(k.arg, k.value) for k in tree.keywords]
    record = {}
    for name, node in items:
        if name not in names:
            raise GenotypeError(f"Genotype(...) has no field {name!r}")
        record[name] = _literal(node)
    return record


def _literal(node: ast.AST):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
            and not node.keywords):
        return list(range(*[_literal(a) for a in node.args]))
    try:
        value = ast.literal_eval(node)
    except ValueError:
        raise GenotypeError(f"Genotype(...): {ast.unparse(node)!r} is not a literal") from None
    return [list(v) if isinstance(v, tuple) else v for v in value] if isinstance(value, (list, tuple)) else value


# --- the bijective index of DARTS-space cells (distinct inputs, concat "all") ---------------------------

def node_choices(j: int, num_ops: int) -> int:
    """Distinct canonical nodes at position ``j`` with distinct inputs: C(2+j, 2) input pairs x ops^2."""
    k = 2 + j
    return k * (k - 1) // 2 * num_ops * num_ops


def cell_size(rules: Rules) -> int:
    size = 1
    for j in range(rules.nodes):
        size *= node_choices(j, len(rules.ops))
    return size


def _pair_index(a: int, b: int) -> int:
    """Index of the input pair a < b among all pairs, ordered by b then a: (0,1)=0, (0,2)=1, (1,2)=2, ..."""
    return b * (b - 1) // 2 + a


def cell_index(cell: Cell, rules: Rules) -> int:
    """Mixed-radix index of a canonical cell (first node most significant); needs ``distinct_inputs``."""
    _need_index(rules)
    n = len(rules.ops)
    value = 0
    for j, ((op_a, a), (op_b, b)) in enumerate(cell.nodes):
        digit = (_pair_index(a, b) * n + rules.ops.index(op_a)) * n + rules.ops.index(op_b)
        value = value * node_choices(j, n) + digit
    return value


def cell_from_index(index: int, rules: Rules, what: str = "cell") -> Cell:
    _need_index(rules)
    n = len(rules.ops)
    if not 0 <= index < cell_size(rules):
        raise GenotypeError(f"{what} index must be in [0, {cell_size(rules)}), got {index}")
    digits = []
    for j in reversed(range(rules.nodes)):
        index, digit = divmod(index, node_choices(j, n))
        digits.append(digit)
    pairs: list[Pair] = []
    for digit in reversed(digits):
        rest, op_b = divmod(digit, n)
        pair, op_a = divmod(rest, n)
        b = 1
        while b * (b + 1) // 2 <= pair:
            b += 1
        a = pair - b * (b - 1) // 2
        pairs += [(rules.ops[op_a], a), (rules.ops[op_b], b)]
    return Cell.make(pairs, None, rules, what)


def _need_index(rules: Rules) -> None:
    if not rules.distinct_inputs or rules.concat != "all":
        raise ValueError("the mixed-radix cell index is defined for distinct inputs and concat 'all' only")


# --- GradSign's per-sample gradients on DARTS-style networks ---------------------------------------------

POOLING_PREFIXES = ("max_pool_", "avg_pool_")


def reduction_cells(depth: int) -> tuple[int, ...]:
    """Indices of the reduction cells of a ``depth``-cell DARTS network (``depth // 3`` and ``2 * depth // 3``)."""
    return tuple(sorted({depth // 3, 2 * depth // 3}))


def cell_output_mean_varies(cell: Cell, reduction: bool, pool_bn: bool = False) -> bool:
    """Whether the per-channel spatial mean of the cell's output depends on the cell's inputs when the
    network sees one sample with BatchNorm in train mode.

    Per sample, a BN output has spatial mean exactly its bias, whatever came in. The cell's two inputs are
    preprocessed by ReLU-conv-BN (or FactorizedReduce, which ends in BN), every conv op ends in BN, and a
    reduction cell's ``skip_connect`` on a cell input is a FactorizedReduce: all of these have a fixed
    mean. A pooling op's output mean does depend on its input (max pooling is not linear; average pooling
    without padded zeros weights the border differently), unless a BN follows it (``pool_bn``, DARTS's search
    ops). An identity ``skip_connect`` passes its input on, so a node varies when one of its ops is a
    pooling op, or an identity of a node that varies."""
    varies: list[bool] = [False, False]  # the two preprocessed cell inputs
    for node in cell.nodes:
        live = False
        for op, src in node:
            if op.startswith(POOLING_PREFIXES):
                live |= not pool_bn
            elif op == "skip_connect" and not (reduction and src < 2):
                live |= varies[src]
        varies.append(live)
    return any(varies[i] for i in cell.concat)


def gradsign_signal(genotype: Genotype, depth: int, pool_bn: bool = False) -> bool:
    """False when every per-sample weight gradient of the ``depth``-cell network of ``genotype`` is float
    rounding noise, so that its GradSign score counts weights instead of measuring sign agreement.

    The network global-average-pools the last cell's output straight into the classifier. When that output's
    spatial mean is fixed per sample (``cell_output_mean_varies``), the loss does not depend on the input
    at batch size 1: the classifier sees BN biases only, and BN's backward removes the spatially constant
    gradient that the pool sends back. What is left in every weight gradient is float rounding (measured on
    DARTS_V2: largest |gradient| below 1e-7), whose signs say nothing about the architecture, so the score
    is close to E|sum of N random signs| (4.48 at N = 32, 6.36 at N = 64) times the number of weights.
    True means the gradient is real behind the last cell's pooling ops (most of the network; the last
    cell's conv ops still get rounding noise). Batch-level proxies are not affected."""
    last = int(depth) - 1
    reduction = last in reduction_cells(int(depth))
    return cell_output_mean_varies(genotype.reduce if reduction else genotype.normal, reduction, pool_bn)
