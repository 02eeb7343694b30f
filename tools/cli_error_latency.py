"""Time to the first error of ``gradsign`` for instant mistakes, beside ``gradsign --help``.

Each case runs ``python -m gradsign ...`` in a fresh process (``--repeat`` times, the median is shown) and
prints its wall time, exit status and the first line of stderr. A mistake in a config (a missing file, an
unknown key, an unknown space) should be answered about as fast as ``--help``: before torch or Ray load.

    python -m tools.cli_error_latency [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE = "configs/nb201-cifar10-smoke.yaml"
SEARCH = "configs/search-nb201-smoke.yaml"
CASES = [
    ("--help", ["--help"]),
    ("score: missing config", ["score", "configs/no-such-config.yaml"]),
    ("score: typo key", ["score", SMOKE, "--set", "sampel.size=3"]),
    ("score: unknown space", ["score", SMOKE, "--set", "space=nb999"]),
    ("score: missing data file", ["score", SMOKE, "--set", "data.path=/no/such/batch.npz"]),
    ("search: missing config", ["search", "configs/no-such-search.yaml"]),
    ("search: typo key", ["search", SEARCH, "--set", "rnus=3"]),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (the median is shown)")
    args = parser.parse_args(argv)
    print(f"{'case':<26} {'median s':>9} {'exit':>5}  first line of stderr (or stdout)")
    for label, cli_args in CASES:
        times, done = [], None
        for _ in range(args.repeat):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "gradsign", *cli_args], cwd=REPO, capture_output=True,
                                  text=True, timeout=300)
            times.append(time.perf_counter() - start)
        text = (done.stderr.strip() or done.stdout.strip()).splitlines()
        first = text[0][:90] if text else ""
        lines = len(done.stderr.strip().splitlines())
        print(f"{label:<26} {statistics.median(times):>9.2f} {done.returncode:>5}  {first}"
              + (f"  [+{lines - 1} more stderr lines]" if lines > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
