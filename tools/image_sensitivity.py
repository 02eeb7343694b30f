"""``python -m tools.image_sensitivity --proxy meco --images 10``: how much a one-image proxy's ranking moves
with the input it is given.

MeCo's protocol forwards one image (``samples=1``: the first image of the batch). The authors' NB201 script
forwards one real training image their loader drew; their ``correlation/foresight`` copy (the NB101 script's
measure) forwards one Gaussian ``randn(1, 3, 64, 64)`` whatever data it is given. A run here forwards the
first image of the ``data.seed`` batch. This scores the cells of a comparison table (its ``arch`` column;
default ``results/proxies/<table>.parquet``) with each of ``--images`` inputs in turn and prints Spearman
against the table's ground truth per input, with their spread, so a gap to a published figure can be read
against the input-to-input variation:

- ``--inputs real``: image k of the seed-0 batch of 64 (the batch rolled so that k comes first);
- ``--inputs gaussian:S``: draw k is N(0, 1) of shape (1, 3, S, S) from ``torch.Generator`` seeded k.

Networks as the scorer builds them (``arch_seed(0, arch)``), one CPU thread. ``--inputs real`` with
image 0 reproduces the table's column exactly.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from scipy import stats

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.actors.scorer import arch_seed
from gradsign.pipeline.driver.data import load_batch
from gradsign.spaces import ground_truth

REPO = Path(__file__).resolve().parents[1]
# table: (space, data file, dataset, classes, ground-truth file, column)
TABLES = {
    "nb201-cifar10": ("nb201", "cifar10_train_1000.npz", "cifar10", 10, "nb201_accuracy.csv", "cifar10_test"),
    "nb201-cifar100": ("nb201", "cifar100_train_468.npz", "cifar100", 100, "nb201_accuracy.csv", "cifar100_test"),
    "nb201-imagenet16-120": ("nb201", "imagenet16_120_sample.npz", "imagenet16-120", 120, "nb201_accuracy.csv",
                             "imagenet16_120_test"),
    "nb301-725": ("darts", "cifar10_train_1000.npz", "cifar10", 10, "nb301_naslib_725.jsonl", "val_accuracy"),
    "nb101-500": ("nb101", "cifar10_train_1000.npz", "cifar10", 10, "nb101_naslib_500.jsonl", "val_accuracy"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", default="meco")
    parser.add_argument("--options", default="{}", help="JSON options of the proxy")
    parser.add_argument("--table", default="nb201-cifar10", choices=sorted(TABLES))
    parser.add_argument("--cells", type=int, default=None, help="only the first N cells of the table")
    parser.add_argument("--inputs", default="real", help="real, or gaussian:SIZE")
    parser.add_argument("--images", type=int, default=10, help="how many inputs (image k / draw k, k < this)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    space_name, npz, dataset, classes, truth_file, truth_column = TABLES[args.table]
    archs = pq.read_table(REPO / "results" / "proxies" / f"{args.table}.parquet").column("arch").to_pylist()
    archs = archs[:args.cells]
    space = spaces.get(space_name)
    truth = ground_truth.load(args.data / truth_file, truth_column, space)
    y_true = np.asarray([truth.values[spaces.key(space, a)] for a in archs])
    batch = load_batch(args.data / npz, dataset, 64, seed=0)
    x_all, y_all = torch.from_numpy(batch.images), torch.from_numpy(batch.labels)
    proxy = proxies.get(args.proxy, **json.loads(args.options))
    print(f"{args.proxy} {args.options} on {len(archs)} cells of {args.table}, inputs {args.inputs}, "
          f"Spearman against {truth_column}:")
    rhos = []
    for k in range(args.images):
        if args.inputs == "real":
            x, y, what = torch.roll(x_all, -k, 0), torch.roll(y_all, -k, 0), f"image {k} (label {int(y_all[k])})"
        elif args.inputs.startswith("gaussian:"):
            size = int(args.inputs.split(":", 1)[1])
            x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(k))
            y, what = y_all[:1], f"gaussian draw {k}"
        else:
            parser.error(f"--inputs: real or gaussian:SIZE, not {args.inputs!r}")
        start = time.perf_counter()
        scores = []
        for arch in archs:
            torch.manual_seed(arch_seed(0, arch))
            scores.append(float(proxy(space.build(arch, classes), x, y)))
        rho = float(stats.spearmanr(scores, y_true, nan_policy="omit").statistic)
        rhos.append(rho)
        print(f"  {what}: {rho:.4f}   ({time.perf_counter() - start:.0f} s)", flush=True)
    r = np.asarray(rhos)
    print(f"over {len(r)} inputs: mean {r.mean():.4f}, sd {r.std(ddof=1) if len(r) > 1 else 0:.4f}, "
          f"min {r.min():.4f}, max {r.max():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
