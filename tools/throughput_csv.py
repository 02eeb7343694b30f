"""Rows of ``results/gpu/throughput.csv`` from ``bench throughput --json`` summaries.

``python -m tools.throughput_csv OUT.csv SUMMARY.json --device NAME --engine per-cell|cohort
--cohort K --mps 0|1 --command "..."`` appends one row per actor count of the summary (writing the header
when ``OUT.csv`` is new). Columns: ``device, space, engine, cohort, actors, mps, cells_per_s, gpu_mem_mib,
command``. ``cells_per_s`` is the steady rate (archs committed after the first shard over the time
between first and last commit); a row whose run committed fewer than two shards has none and is left
out (its absence says it was not measured). ``gpu_mem_mib`` is the mean over actors of each actor
process's peak GPU memory (empty where ``nvidia-smi`` was not there: a CPU rehearsal, whose rows carry
``device`` = ``cpu`` and must never be committed as GPU figures).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

COLUMNS = ("device", "space", "engine", "cohort", "actors", "mps", "cells_per_s", "gpu_mem_mib", "command")


def rows_of(summary: dict, device: str, space: str, engine: str, cohort: int, mps: int, command: str) -> list[dict]:
    out = []
    for row in summary["rows"]:
        rate = row.get("steady_archs_per_second")
        if rate is None:
            continue
        mem = row.get("gpu_mib_per_actor")
        out.append({"device": device, "space": space, "engine": engine, "cohort": cohort, "actors": row["actors"],
                    "mps": mps, "cells_per_s": round(rate, 2), "gpu_mem_mib": "" if mem is None else round(mem),
                    "command": command})
    return out


def append(path: Path, rows: list[dict]) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.throughput_csv")
    p.add_argument("out", type=Path)
    p.add_argument("summary", type=Path, help="a `bench throughput --json` file")
    p.add_argument("--device", required=True)
    p.add_argument("--space", default="nb201")
    p.add_argument("--engine", required=True, choices=["per-cell", "cohort"])
    p.add_argument("--cohort", type=int, required=True)
    p.add_argument("--mps", type=int, default=0, choices=[0, 1])
    p.add_argument("--command", required=True)
    a = p.parse_args(argv)
    if not a.summary.is_file():
        print(f"{a.summary}: no summary (that measurement did not finish)", file=sys.stderr)
        return 1
    rows = rows_of(json.loads(a.summary.read_text()), a.device, a.space, a.engine, a.cohort, a.mps, a.command)
    append(a.out, rows)
    print(f"{a.out}: {len(rows)} rows added")
    return 0


if __name__ == "__main__":
    sys.exit(main())
