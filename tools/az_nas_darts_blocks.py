"""``python -m tools.az_nas_darts_blocks --cells 100``: AZ-NAS trainability on DARTS cells, with the block's
Jacobian taken from one input (as ``actors/proxies/az_nas.py``) or from both.

A DARTS cell reads the two previous block ends: F_l = cell_l(F_{l-2}, F_{l-1}) (the stem stands in for both
before the first cell). ``az_nas.trainability`` probes F_l -> F_{l-1} only (the authors' NB201 cells have
one input); the path from F_{l-2} is left out. The ``both`` variant takes u = v^T dF_l/d(F_{l-1}, F_{l-2})
(one vector-Jacobian product for both inputs), each part pixel-unshuffled to F_l's resolution, the two
concatenated along channels, and then sigma and t_l exactly as the product does, with the same Rademacher
tensors. Cells: every k-th row of ``nb301_naslib_725.jsonl`` (spread over the table), networks and draws as
the scorer's (``arch_seed(0, arch)``, the default protocol: Gaussian input of the batch's shape). Prints
Spearman against ``val_accuracy`` of each variant and of the AZ-NAS aggregate built with it (the other
components from ``results/proxies/nb301-725.parquet``, over the same cells), and checks that the one-input
variant reproduces that table's ``az_nas_trainability``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from scipy import stats

from gradsign import spaces
from gradsign.actors.proxies import az_nas
from gradsign.actors.scorer import arch_seed

REPO = Path(__file__).resolve().parents[1]


def both_inputs_trainability(features: list[torch.Tensor], generator: torch.Generator) -> float:
    """Mean over blocks of t_l with the Jacobian of F_l taken with respect to both of its inputs."""
    scores = []
    for k in reversed(range(1, len(features))):
        f_out = features[k]
        inputs = [features[k - 1]] if k == 1 else [features[k - 1], features[k - 2]]
        v = az_nas.rademacher(f_out.shape, generator).to(device=f_out.device, dtype=f_out.dtype)
        grads = torch.autograd.grad(f_out, inputs, grad_outputs=v, retain_graph=True, allow_unused=True)
        parts = [az_nas._match_resolution(torch.zeros_like(f) if g is None else g, v.shape[2:])
                 for f, g in zip(inputs, grads)]
        positions = v.shape[0] * v.shape[2] * v.shape[3]
        u = torch.cat(parts, dim=1).movedim(1, -1).reshape(positions, -1).double()
        w = v.movedim(1, -1).reshape(positions, -1).double()
        sigma = float(torch.linalg.svdvals(u.T @ w / positions).max().item())
        scores.append(-sigma - 1.0 / (sigma + az_nas.SIGMA_EPS) + 2.0)
    return float(np.mean(scores))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    space = spaces.get("darts")
    rows = [json.loads(line) for line in open(args.data / "nb301_naslib_725.jsonl")]
    step = max(1, len(rows) // args.cells)
    rows = rows[::step][:args.cells]
    table = pq.read_table(REPO / "results" / "proxies" / "nb301-725.parquet")
    by_arch = {a: i for i, a in enumerate(table.column("arch").to_pylist())}
    columns = {c: table.column(c).to_numpy(zero_copy_only=False) for c in az_nas.COLUMNS.values()}
    inputs = torch.zeros(64, 3, 32, 32)
    one, both, truth, picked = [], [], [], []
    start = time.perf_counter()
    for row in rows:
        arch = space.from_record(row)
        torch.manual_seed(arch_seed(0, arch))
        net = space.build(arch, 10)
        features, generator = az_nas._features(net, inputs, "default", "random", 0, grad=True)
        state = generator.get_state()
        one.append(az_nas.trainability(features, generator))
        generator.set_state(state)
        both.append(both_inputs_trainability(features, generator))
        truth.append(row["val_accuracy"])
        picked.append(by_arch[arch])
    seconds = (time.perf_counter() - start) / len(rows)
    stored = columns["az_nas_trainability"][picked]
    worst = float(np.max(np.abs(np.asarray(one) - stored) / np.maximum(np.abs(stored), 1e-12)))
    print(f"{len(rows)} NB301 cells (every {step}th row), {seconds:.1f} s per cell (both variants, one thread)")
    print(f"one-input trainability against the table's az_nas_trainability: max relative difference {worst:.2e}")
    for name, values in (("one input (product)", one), ("both inputs", both)):
        agg = az_nas.aggregate({**{c: v[picked] for c, v in columns.items()}, "az_nas_trainability": values})
        print(f"{name}: trainability Spearman {stats.spearmanr(values, truth).statistic:.4f}, "
              f"AZ-NAS aggregate {stats.spearmanr(agg, truth).statistic:.4f}")
    no_train = az_nas.aggregate({c: v[picked] for c, v in columns.items() if c != "az_nas_trainability"})
    print(f"aggregate without trainability: {stats.spearmanr(no_train, truth).statistic:.4f}")
    print(f"Spearman between the two trainabilities: {stats.spearmanr(one, both).statistic:.4f}")
    return 0 if math.isfinite(worst) else 1


if __name__ == "__main__":
    raise SystemExit(main())
