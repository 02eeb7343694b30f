"""The test accuracies of the pick after K queries, from a search folder's trajectories (issue: comparing a
search with one of another query count, e.g. RoBoT's 20): ``python -m tools.at_queries
FOLDER --queries 20``.

Reads ``FOLDER/trajectories.parquet`` (one row per query: variant, run, step, arch, validation, ...) and the
benchmark's final table named in ``FOLDER/config.yaml``. For each run, the pick after its first K queries is
the first queried arch with the best validation among them (the pick of RS, REA and REINFORCE, whose
incumbent is the best signal seen; BOHB's is not, so BOHB variants are left out); a run with fewer than K
queries keeps its last pick. Prints, per variant, the mean +- std over runs of the pick's test accuracy on
every dataset of ``benchmark.final.columns``. Repeated queries of one arch count (each costs its training).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml


def picks_at(folder: Path, queries: int) -> dict[str, np.ndarray]:
    """{variant: (runs, datasets) test accuracies of the pick after ``queries`` queries}."""
    from gradsign.spaces.ground_truth import read_table

    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    columns = cfg["benchmark"]["final"]["columns"]
    final = read_table(cfg["benchmark"]["final"]["path"]).to_pydict()
    row_of = {arch: k for k, arch in enumerate(final["arch"])}
    t = pq.read_table(folder / "trajectories.parquet").to_pydict()
    runs: dict[tuple[str, int], list[int]] = {}
    for i, (variant, run) in enumerate(zip(t["variant"], t["run"])):
        if "BOHB" not in variant:
            runs.setdefault((variant, run), []).append(i)
    out: dict[str, list[list[float]]] = {}
    for (variant, _), rows in runs.items():
        first = sorted(rows, key=lambda i: t["step"][i])[:queries]
        pick = max(first, key=lambda i: (t["validation"][i], -t["step"][i]))
        k = row_of[t["arch"][pick]]
        out.setdefault(variant, []).append([float(final[c][k]) for c in columns.values()])
    return {variant: np.asarray(v) for variant, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a `gradsign search` output folder (with trajectories.parquet)")
    parser.add_argument("--queries", type=int, default=20, help="K: the queries each run may spend (default 20)")
    args = parser.parse_args(argv)
    cfg = yaml.safe_load((args.folder / "config.yaml").read_text())
    names = list(cfg["benchmark"]["final"]["columns"])
    for variant, values in picks_at(args.folder, args.queries).items():
        text = " / ".join(f"{m:.2f} +- {s:.2f}" for m, s in zip(values.mean(0), values.std(0)))
        print(f"{variant} after {args.queries} queries ({len(values)} runs; {' / '.join(names)}): {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
