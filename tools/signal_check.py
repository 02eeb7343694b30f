"""``python -m tools.signal_check RUN_DIR``: are a DARTS/NDS run's GradSign scores weight counts?

For every scored arch of a run folder whose space has ``gradsign_signal`` (DARTS-style cells; see
``spaces/darts_genotype.py``) this builds the network (no forward pass) and counts the weights GradSign
sums over (every ``nn.Conv2d``/``nn.Linear`` weight entry), then prints per group (with / without the
per-sample signal) the ratio score / weights, against E|sum of N random signs| for the run's batch of N:
the ratio an arch's score has when every sign is a coin flip. It also prints, per group, Spearman rho of
the score against the weight count (1.0 when the score is a weight count) and, when the run has ground
truth, Spearman rho of the score, the weight count and the ratio (the sign agreement per weight) against
it. Read-only: the folder is not changed.

    python -m tools.signal_check runs/darts-cifar10-nb301-725 --limit 200
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np


def coin_flip_agreement(n: int) -> float:
    """E|X_1 + ... + X_n| for independent uniform signs X_i in {-1, +1}."""
    k = math.ceil(n / 2)
    return n * math.comb(n - 1, k - 1) / 2 ** (n - 1) if n % 2 else n * math.comb(n, n // 2) / 2 ** n


def weight_count(net) -> int:
    """The number of weight entries GradSign sums over (the engine's own layer list)."""
    from gradsign.actors.layers import weighted_layers

    return sum(m.weight.numel() for _, m in weighted_layers(net))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.signal_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--limit", type=int, default=None, help="only the first N scored archs")
    args = parser.parse_args(argv)

    from scipy import stats

    from gradsign.pipeline.driver.data import dataset_info
    from gradsign.pipeline.driver.space_cache import get_space
    from gradsign.pipeline.common.run_folder import read_run

    run = read_run(args.run_dir)
    space = get_space(run.config["space"])
    if not callable(getattr(space, "gradsign_signal", None)) or "gradsign" not in run.scores.column_names:
        print(f"{args.run_dir}: space {run.config['space']!r} has no gradsign_signal, or the run scored no gradsign",
              file=sys.stderr)
        return 2
    rows = [r for r in run.scores.select(["arch", "gradsign", "error"]).to_pylist()
            if r["error"] is None and r["gradsign"] is not None and math.isfinite(r["gradsign"])]
    rows = rows[: args.limit] if args.limit else rows
    num_classes = dataset_info(run.config["dataset"]).num_classes
    batch = int(run.config["data"]["batch_size"])
    truth = {}
    gt = run.config.get("ground_truth") or {}
    if gt.get("path"):
        from gradsign.spaces import ground_truth

        truth = ground_truth.load(gt["path"], gt["column"], space, gt.get("where")).values
    groups: dict[bool, list[tuple[float, int, float]]] = {True: [], False: []}
    for row in rows:
        groups[bool(space.gradsign_signal(row["arch"]))].append(
            (row["gradsign"], weight_count(space.build(row["arch"], num_classes)),
             truth.get(space.key(row["arch"]), math.nan)))
    print(f"{args.run_dir}: {len(rows)} archs, batch {batch}; coin flips give {coin_flip_agreement(batch):.3f} "
          "per weight")
    against = f" vs {gt['column']}: score / weights / ratio" if truth else ""
    print(f"{'group':<16}{'n':>6}{'score/weights':>24}{'min':>8}{'max':>8}{'rho(score, weights)':>22}{against}")
    for signal, label in ((True, "with signal"), (False, "without signal")):
        pairs = groups[signal]
        if not pairs:
            print(f"{label:<16}{0:>6}")
            continue
        score, weights, acc = np.asarray(pairs, float).T
        ratio = score / weights

        def rho(a, b) -> float:
            keep = np.isfinite(a) & np.isfinite(b)
            return float(stats.spearmanr(a[keep], b[keep]).statistic) if keep.sum() > 2 else math.nan

        tail = f"   {rho(score, acc):.3f} / {rho(weights, acc):.3f} / {rho(ratio, acc):.3f}" if truth else ""
        print(f"{label:<16}{len(pairs):>6}{f'{ratio.mean():.3f} +- {ratio.std():.3f}':>24}{ratio.min():>8.3f}"
              f"{ratio.max():>8.3f}{rho(score, weights):>22.3f}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
