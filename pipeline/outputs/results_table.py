"""One whole-space score table from a run folder: ``python -m gradsign.pipeline.outputs.results_table RUN_DIR OUT.parquet``.

The table the project ships under ``results/`` (and the search stage reads): one row per committed arch,
sorted by ``arch_id``, with columns ``arch_id``, ``arch``, ``official_index`` (from the run's ground-truth
table, null where it has none), every proxy of the run, ``nonfinite``, ``seconds``, and ``error``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gradsign import spaces
from gradsign.spaces import ground_truth as gt_loader

from gradsign.pipeline.driver import config as config_mod


def build(run_dir: str | Path) -> pa.Table:
    """The committed score rows of ``run_dir`` with the official index joined on the canonical arch."""
    run_dir = Path(run_dir)
    cfg = config_mod.resolve(run_dir / "config.yaml")
    parts = sorted((run_dir / "scores").glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{run_dir} has no committed score files")
    table = pa.concat_tables(pq.read_table(p) for p in parts)
    table = table.take(pc.sort_indices(table, [("arch_id", "ascending")]))
    official: dict[str, int] = {}
    if cfg["ground_truth"]["path"] is not None:
        space = spaces.get(cfg["space"])
        official = gt_loader.load(cfg["ground_truth"]["path"], cfg["ground_truth"]["column"], space,
                                  cfg["ground_truth"]["where"]).official_index
    index = pa.array([official.get(a) for a in table.column("arch").to_pylist()], pa.int64())
    return table.add_column(2, "official_index", index)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m gradsign.pipeline.outputs.results_table RUN_DIR OUT.parquet", file=sys.stderr)
        return 2
    table = build(args[0])
    pq.write_table(table, args[1], compression="zstd")
    print(f"{args[1]}: {table.num_rows} rows, columns {table.column_names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
