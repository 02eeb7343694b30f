"""One whole-space score table from a run folder:
``python -m gradsign.pipeline.outputs.results_table RUN_DIR OUT.parquet``.

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
from gradsign.pipeline.common import run_folder
from gradsign.pipeline.driver import config as config_mod


def build(run_dir: str | Path) -> pa.Table:
    """The committed score rows of ``run_dir``, verified (``pipeline/common/run_folder.py``: ScoreFileError
    names a file that fails), with the official index joined on the canonical arch."""
    run_dir = Path(run_dir)
    cfg = config_mod.resolve(run_dir / run_folder.CONFIG)
    if not run_folder.committed(run_dir):
        raise FileNotFoundError(f"{run_dir} has no committed score files")
    table = run_folder.read_scores(run_dir)
    table = table.take(pc.sort_indices(table, [("arch_id", "ascending")]))
    truth = config_mod.ground_truth(cfg, spaces.get(cfg["space"]))  # with ground_truth.where
    official = {} if truth is None else truth.official_index
    index = pa.array([official.get(a) for a in table.column("arch").to_pylist()], pa.int64())
    return table.add_column(2, "official_index", index)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m gradsign.pipeline.outputs.results_table RUN_DIR OUT.parquet", file=sys.stderr)
        return 2
    try:
        table = build(args[0])
    except (ValueError, FileNotFoundError) as exc:  # a score file that fails verification: one line, exit 2
        print(f"gradsign: error: {exc}", file=sys.stderr)
        return 2
    pq.write_table(table, args[1], compression="zstd")
    print(f"{args[1]}: {table.num_rows} rows, columns {table.column_names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
