"""``python -m tools.noise_map --space darts --arch-id N``: which weights' signs are rounding noise?

GradSign sums signs of per-sample gradients. Where a weight's gradient is zero in exact arithmetic but not
in floating point (in DARTS-style networks: every weight whose only route to the loss is a BatchNorm output
that the classifier sees through its spatial mean, which at batch size 1 is the BN bias whatever the
input), its signs are rounding noise, and a change of precision or summation order redraws them. This tool
scores one network twice from the same initialisation and batch: with the production engine in float32 (as
the scorer runs) and with the reference loop in float64, and prints per layer group (``stem``, each
``cells.K``, ``classifier``) how many weights' sign sums differ between the two. A weight with a real
per-sample signal has the same sign sum in both (up to the rare gradient near zero); a noise weight
differs in most draws. It also prints both scores and their relative difference. Read-only; CPU is fine.

With ``--table`` (a JSON-lines table with ``val_accuracy``, as ``nb301_naslib_725.jsonl``) it does this for
``--cells`` rows drawn at random (``--sample-seed``) and asks where GradSign's correlation comes from: a layer
is *noise* when more than half of its sign sums differ (the gap is wide: signal layers differ in at most a
few per cent, noise layers in most; the classifier, whose columns are noise for the channels of BN-ended
nodes only, counts as one layer either way), and it prints Spearman / Kendall against ``val_accuracy`` of the
score, the weight count, and both restricted to the layers with a signal.

    python -m tools.noise_map --space darts --arch-id 44118116947695556 --batch 64
    python -m tools.noise_map --space darts --table ../shared/data/nb301_naslib_725.jsonl --cells 80
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LayerNoise:
    """One scored layer (or a group of them, ``noise_map``): weight entries, sign sums that differ between
    fp32 and fp64, and its float32 share of the score (sum of |S| over its weights)."""

    name: str
    weights: int
    differ: int
    score: float

    @property
    def noise(self) -> bool:
        """More than half of its sign sums moved with the precision: its gradients are rounding noise."""
        return 2 * self.differ > self.weights


def layer_group(name: str) -> str:
    """``cells.7.ops.4.1`` -> ``cells.7``; ``stem.0`` -> ``stem``; ``classifier`` -> ``classifier``."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "cells" and len(parts) > 1 else parts[0]


def layer_noise(net, inputs, targets) -> tuple[list[LayerNoise], float, float]:
    """(per scored layer in network order, fp32 score, fp64 score) for ``net`` as initialised: the hooks
    engine in float32 against the per-sample loop in float64 on a double copy. ``net`` is not changed."""
    import torch

    from gradsign.actors.per_sample import sign_sums, sign_sums_loop

    fp32 = sign_sums(copy.deepcopy(net), inputs.float(), targets, engine="hooks")
    fp64 = sign_sums_loop(copy.deepcopy(net).double(), inputs.double(), targets)
    layers = [LayerNoise(name, exact.numel(), int((fp32.sums[name].double() != exact).sum()),
                         float(fp32.sums[name].abs().sum(dtype=torch.float64)))
              for name, exact in fp64.sums.items()]
    return layers, fp32.score(), fp64.score()


def merged(name: str, layers: list[LayerNoise]) -> LayerNoise:
    """``layers`` summed into one record called ``name``."""
    return LayerNoise(name, sum(x.weights for x in layers), sum(x.differ for x in layers), sum(x.score for x in layers))


def noise_map(net, inputs, targets) -> tuple[list[LayerNoise], float, float]:
    """``layer_noise`` summed per layer group (``layer_group``), in network order."""
    layers, fp32, fp64 = layer_noise(net, inputs, targets)
    groups: dict[str, list[LayerNoise]] = {}
    for layer in layers:
        groups.setdefault(layer_group(layer.name), []).append(layer)
    return [merged(g, members) for g, members in groups.items()], fp32, fp64


def table_study(space, rows: list[dict], build, inputs, targets) -> dict[str, tuple[float, float]]:
    """For table rows with ``val_accuracy``: Spearman / Kendall against it of the score, the weight count,
    and both over the layers with a signal only, plus the noise share of the weights (mean, max)."""
    import numpy as np
    from scipy import stats

    columns: dict[str, list[float]] = {"score": [], "weights": [], "signal-layer score": [],
                                       "signal-layer weights": [], "noise share": []}
    for row in rows:
        layers, fp32, _ = layer_noise(build(space.from_record(row)), inputs, targets)
        whole, signal = merged("all", layers), merged("signal", [x for x in layers if not x.noise])
        for key, value in (("score", fp32), ("weights", whole.weights), ("signal-layer score", signal.score),
                           ("signal-layer weights", signal.weights),
                           ("noise share", 1 - signal.weights / whole.weights)):
            columns[key].append(float(value))
    truth = np.asarray([float(r["val_accuracy"]) for r in rows])
    out = {k: (float(stats.spearmanr(v, truth).statistic), float(stats.kendalltau(v, truth).statistic))
           for k, v in columns.items() if k != "noise share"}
    share = np.asarray(columns["noise share"])
    out["noise share"] = (float(share.mean()), float(share.max()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.noise_map", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="darts")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch-id", type=int)
    which.add_argument("--table", help="JSON-lines rows with val_accuracy (normal/reduce or arch)")
    parser.add_argument("--cells", type=int, default=80, help="--table: rows drawn")
    parser.add_argument("--sample-seed", type=int, default=1, help="--table: which rows")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data", default=None,
                        help="the dataset file (default: the shared data folder's file, $GRADSIGN_DATA, "
                             "unset: shared/data beside the checkout)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="the run seed (the network's init) and the batch's")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    from gradsign.actors.scorer import arch_seed
    from tools.peer_common import DATA_FILES
    from gradsign.pipeline.driver.data import dataset_info, load_batch
    from gradsign.pipeline.driver.space_cache import get_space

    if args.threads:
        torch.set_num_threads(args.threads)
    info = dataset_info(args.dataset)
    from gradsign.pipeline.common.layered import default_data_dir

    data = args.data or Path(os.environ.get("GRADSIGN_DATA", default_data_dir())) / DATA_FILES[info.name]
    batch = load_batch(data, info.name, args.batch, seed=args.seed)
    space = get_space(args.space)
    inputs, targets = torch.from_numpy(batch.images), torch.from_numpy(batch.labels)

    def build(arch: str):
        torch.manual_seed(arch_seed(args.seed, arch))
        return space.build(arch, info.num_classes)

    if args.table:
        import json
        import random

        with open(args.table) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        rows = [rows[i] for i in
                sorted(random.Random(args.sample_seed).sample(range(len(rows)), min(args.cells, len(rows))))]
        study = table_study(space, rows, build, inputs, targets)
        print(f"{args.table}: {len(rows)} rows (sample seed {args.sample_seed}), batch {args.batch}; "
              f"noise share of the weights: mean {study['noise share'][0]:.3f}, max {study['noise share'][1]:.3f}")
        print(f"{'vs val_accuracy':<24}{'Spearman':>10}{'Kendall':>10}")
        for key in ("score", "weights", "signal-layer score", "signal-layer weights"):
            print(f"{key:<24}{study[key][0]:>10.3f}{study[key][1]:>10.3f}")
        return 0
    arch = space.arch(args.arch_id)
    groups, fp32, fp64 = noise_map(build(arch), inputs, targets)
    signal = getattr(space, "gradsign_signal", None)
    print(f"{args.space} arch {args.arch_id}" + (f" (gradsign_signal {signal(arch)})" if callable(signal) else ""))
    print(f"score: float32 hooks {fp32:.0f}, float64 loop {fp64:.0f}, relative difference "
          f"{abs(fp32 - fp64) / max(fp64, 1.0):.2e}")
    print(f"{'group':<12}{'weights':>10}{'sign sums differ':>18}")
    for g in groups + [merged("all", groups)]:
        print(f"{g.name:<12}{g.weights:>10}{g.differ:>10} ({g.differ / g.weights:6.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
