"""``python -m tools.candidate_budget TABLE.parquet [MORE ...]``: candidate lists judged at the budget they cost.

For each ranking (every proxy column of a comparison table, and the ensembles asked for) and each minimum
distance, the list ``gradsign candidates`` makes (``pipeline.outputs.candidates.table_topk``: best first,
greedy diverse at ``--min-distance``) is queried in order, as a search that trains the first k cells would:
the pick among the first k (k = 10, 20) is the cell with the best CIFAR-10 12-epoch validation accuracy (the
search signal of the NB201 paper's searches), reported by its 200-epoch test accuracy on CIFAR-10, CIFAR-100
and ImageNet16-120. Deterministic: no search randomness. The table's cells bound what any list can reach:
the ceiling line is the best pick among all of them by the same signal.

The lists are ranked by proxies that need no training; their scoring cost is not charged here (the table's
``seconds`` give it). Picking the best list by its test accuracy is selection on the test set: the report says
which list was chosen and how.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from gradsign import spaces
from gradsign.pipeline.outputs.candidates import table_topk, write_list

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def benchmark(data: Path) -> tuple[dict[str, float], dict[str, tuple[float, float, float]]]:
    """(arch -> CIFAR-10 12-epoch validation accuracy, arch -> 200-epoch test accuracy on the 3 datasets)."""
    with open(data / "nb201_cifar10_hp12.csv") as f:
        valid = {r["arch"]: float(r["cifar10_valid_12ep"]) for r in csv.DictReader(f)}
    with open(data / "nb201_accuracy.csv") as f:
        test = {r["arch"]: (float(r["cifar10_test"]), float(r["cifar100_test"]), float(r["imagenet16_120_test"]))
                for r in csv.DictReader(f)}
    return valid, test


def pick(archs: list[str], k: int, valid: dict[str, float]) -> str:
    """The arch with the best 12-epoch validation accuracy among the first ``k`` (ties: the earlier)."""
    first = archs[:k]
    return max(first, key=lambda a: (valid[a], -first.index(a)))


def fmt(acc: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in acc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", help="score tables or run folders, joined on arch_id (each proxy "
                                                  "from the first source that has it)")
    parser.add_argument("--by", default=None, help="rankings to try, ';'-separated, each a column or p1,p2 (default: "
                                                  "every proxy column)")
    parser.add_argument("--distances", default="0,2,3,4")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--write", default=None, help="RANKING@D=OUT.jsonl: write that list (e.g. az_nas@2=x.jsonl)")
    args = parser.parse_args(argv)
    import pyarrow.parquet as pq

    space = spaces.get("nb201")
    table = pq.read_table(args.tables[0]) if len(args.tables) == 1 and not Path(args.tables[0]).is_dir() else None
    valid, test = benchmark(args.data)
    if table is None:
        _, table = table_topk(args.tables, space, [args.by.split(";")[0].split(",")[0]], 1)
    archs = table.column("arch").to_pylist()
    ceiling = max(archs, key=lambda a: valid[a])
    print(f"{len(archs)} cells; the best of them by 12-epoch validation accuracy: {fmt(test[ceiling])} "
          f"(the ceiling of any list from this table)")
    skip = {"arch_id", "arch", "official_index"}
    rankings = ([b.split(",") for b in args.by.split(";")] if args.by else
                [[c] for c in table.column_names if c not in skip])
    print("| ranking | d | best of first 10 (C10 / C100 / IN16) | best of first 20 |")
    print("|---|---|---|---|")
    results = []
    for by in rankings:
        for d in (int(x) for x in args.distances.split(",")):
            top, _ = table_topk(args.tables, space, by, 20, d or None)
            listed = top.column("arch").to_pylist()
            if len(listed) < 20:
                continue
            p10, p20 = test[pick(listed, 10, valid)], test[pick(listed, 20, valid)]
            results.append((p10, "+".join(by), d))
            print(f"| `{'+'.join(by)}` | {d} | {fmt(p10)} | {fmt(p20)} |", flush=True)
            if args.write and args.write.split("=")[0] == f"{'+'.join(by)}@{d}":
                write_list(top, args.write.split("=", 1)[1])
    best = max(results, key=lambda r: (sum(r[0]), r[1]))
    print(f"best list at 10 queries (by the sum of the three test accuracies: selection on the test set): "
          f"`{best[1]}` at d = {best[2]}: {fmt(best[0])}")
    return 0 if not math.isnan(sum(best[0])) else 1


if __name__ == "__main__":
    raise SystemExit(main())
