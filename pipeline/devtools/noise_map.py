"""``python -m gradsign.pipeline.devtools.noise_map --space darts --arch-id N``: which weights' signs are rounding noise?

GradSign sums signs of per-sample gradients. Where a weight's gradient is zero in exact arithmetic but not
in floating point (in DARTS-style networks: every weight whose only route to the loss is a BatchNorm output
that the classifier sees through its spatial mean, which at batch size 1 is the BN bias whatever the
input), its signs are rounding noise, and a change of precision or summation order redraws them. This tool
scores one network twice from the same initialisation and batch: with the production engine in float32 (as
the scorer runs) and with the reference loop in float64, and prints per layer group (``stem``, each
``cells.K``, ``classifier``) how many weights' sign sums differ between the two. A weight with a real
per-sample signal has the same sign sum in both (up to the rare gradient near zero); a noise weight
differs in most draws. It also prints both scores and their relative difference. Read-only; CPU is fine.

    python -m gradsign.pipeline.devtools.noise_map --space darts --arch-id 44118116947695556 --batch 64
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GroupNoise:
    """One layer group: weight entries, and how many of their sign sums differ between fp32 and fp64."""

    group: str
    weights: int
    differ: int


def layer_group(name: str) -> str:
    """``cells.7.ops.4.1`` -> ``cells.7``; ``stem.0`` -> ``stem``; ``classifier`` -> ``classifier``."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "cells" and len(parts) > 1 else parts[0]


def noise_map(net, inputs, targets) -> tuple[list[GroupNoise], float, float]:
    """(per layer group in network order, fp32 score, fp64 score) for ``net`` as initialised: the hooks
    engine in float32 against the per-sample loop in float64 on a double copy. ``net`` is not changed."""
    from gradsign.actors.per_sample import sign_sums, sign_sums_loop

    fp32 = sign_sums(copy.deepcopy(net), inputs.float(), targets, engine="hooks")
    fp64 = sign_sums_loop(copy.deepcopy(net).double(), inputs.double(), targets)
    groups: dict[str, list[int]] = {}
    for name, exact in fp64.sums.items():
        counts = groups.setdefault(layer_group(name), [0, 0])
        counts[0] += exact.numel()
        counts[1] += int((fp32.sums[name].double() != exact).sum())
    return [GroupNoise(g, w, d) for g, (w, d) in groups.items()], fp32.score(), fp64.score()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradsign.pipeline.devtools.noise_map", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="darts")
    parser.add_argument("--arch-id", type=int, required=True)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data", default=None,
                        help="the dataset file (default: the shared data folder's file, $GRADSIGN_DATA or ../shared/data)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="the run seed (the network's init) and the batch's")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    from gradsign.actors.scorer import arch_seed
    from gradsign.pipeline.devtools.peer_common import DATA_FILES
    from gradsign.pipeline.driver.data import dataset_info, load_batch
    from gradsign.pipeline.driver.space_cache import get_space

    if args.threads:
        torch.set_num_threads(args.threads)
    info = dataset_info(args.dataset)
    data = args.data or Path(os.environ.get("GRADSIGN_DATA", Path("..") / "shared" / "data")) / DATA_FILES[info.name]
    batch = load_batch(data, info.name, args.batch, seed=args.seed)
    space = get_space(args.space)
    arch = space.arch(args.arch_id)
    torch.manual_seed(arch_seed(args.seed, arch))
    net = space.build(arch, info.num_classes)
    groups, fp32, fp64 = noise_map(net, torch.from_numpy(batch.images), torch.from_numpy(batch.labels))
    signal = getattr(space, "gradsign_signal", None)
    print(f"{args.space} arch {args.arch_id}" + (f" (gradsign_signal {signal(arch)})" if callable(signal) else ""))
    print(f"score: float32 hooks {fp32:.0f}, float64 loop {fp64:.0f}, relative difference "
          f"{abs(fp32 - fp64) / max(fp64, 1.0):.2e}")
    print(f"{'group':<12}{'weights':>10}{'sign sums differ':>18}")
    for g in groups + [GroupNoise("all", sum(x.weights for x in groups), sum(x.differ for x in groups))]:
        print(f"{g.group:<12}{g.weights:>10}{g.differ:>10} ({g.differ / g.weights:6.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
