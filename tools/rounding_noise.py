"""``python -m tools.rounding_noise``: how much of GradSign is float rounding, in each BatchNorm mode.

For cells of NB201 (a uniform sample), of NB301 (rows of ``nb301_naslib_725.jsonl``) and of NB101 (rows of
``nb101_naslib_500.jsonl``, ``--nb101``), each network is
scored twice from the same initialisation and batch: the hooks engine in float32 (as runs score) and in
float64 on a double copy (equal to the per-sample loop in float64: tests/test_gradsign_batch_statistics.py).
It prints, per space and ``bn`` mode, the share of sign sums S_k that differ between the two precisions and
the median relative change of the score. A sign sum that moves with the precision is rounding, not signal.
It also prints the mean of |S_k| / N (float64): N independent fair signs give sqrt(2 / (pi N)) in expectation
(0.0997 at N = 64). A value near it is what signs that agree no more than coin flips give (weights whose
gradient is 0 for every sample add 0 and pull it down), and then the score is about that constant times N times
the weight count.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
from pathlib import Path

import numpy as np
import torch

from gradsign import spaces
from gradsign.actors.per_sample import sign_sums
from gradsign.actors.scorer import arch_seed
from gradsign.pipeline.driver.data import load_batch


def precision_change(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bn: str
                     ) -> tuple[int, int, float, float]:
    """(sign sums that differ between fp32 and fp64, sign sums, relative score change, sum of |S_k| in fp64)
    for one network."""
    fp32 = sign_sums(copy.deepcopy(net), x.float(), y, bn=bn)
    fp64 = sign_sums(copy.deepcopy(net).double(), x.double(), y, bn=bn)
    differ = sum(int((fp32.sums[k].double() != fp64.sums[k]).sum()) for k in fp64.sums)
    total = sum(s.numel() for s in fp64.sums.values())
    magnitude = sum(float(s.abs().sum()) for s in fp64.sums.values())
    return differ, total, abs(fp32.score() - fp64.score()) / max(1.0, fp64.score()), magnitude


TABLES = {"darts": "nb301_naslib_725.jsonl", "nb101": "nb101_naslib_500.jsonl"}  # rows drawn from these


def cells(space_name: str, count: int, data: Path) -> list[str]:
    space = spaces.get(space_name)
    if space_name in TABLES:
        rows = [json.loads(line) for line in open(data / TABLES[space_name])]
        rng = np.random.default_rng(1)
        return [space.from_record(rows[i]) for i in rng.choice(len(rows), count, replace=False)]
    return [space.arch(int(i)) for i in space.sample_ids(count, 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--nb201", type=int, default=20, help="NB201 cells")
    parser.add_argument("--nb301", type=int, default=8, help="NB301 cells")
    parser.add_argument("--nb101", type=int, default=0, help="NB101 cells (stem 128, 9 cells: slow)")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    batch = load_batch(args.data / "cifar10_train_1000.npz", "cifar10", args.batch, seed=0)
    x, y = torch.from_numpy(batch.images), torch.from_numpy(batch.labels)
    print(f"| space | cells | bn | sign sums that differ fp32 vs fp64 | median relative score change "
          f"| mean |S|/N (coin flips: {math.sqrt(2 / (math.pi * args.batch)):.4f}) |")
    print("|---|---|---|---|---|---|")
    for space_name, count in (("nb201", args.nb201), ("darts", args.nb301), ("nb101", args.nb101)):
        if not count:
            continue
        space = spaces.get(space_name)
        archs = cells(space_name, count, args.data)
        for bn in ("sample", "batch"):
            differ = total = 0
            magnitude = 0.0
            changes = []
            for arch in archs:
                torch.manual_seed(arch_seed(0, arch))
                d, t, c, m = precision_change(space.build(arch, 10), x, y, bn)
                differ, total, magnitude = differ + d, total + t, magnitude + m
                changes.append(c)
            print(f"| {space_name} | {len(archs)} | {bn} | {100 * differ / total:.2f}% ({differ:,} of {total:,}) "
                  f"| {100 * statistics.median(changes):.4f}% | {magnitude / (total * args.batch):.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
