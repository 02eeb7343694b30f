"""``gradsign score CONFIG [--set key=value ...]``, ``gradsign report RUN_DIR``, ``gradsign compare RUN_DIR...``,
``gradsign truth nb201 FILE.pth [-o TABLE.parquet]``, ``gradsign truth nds FILE.json [-o TABLE.parquet]``,
``gradsign search CONFIG [--set key=value ...]``.

Exit status: 0 all requested archs scored; 3 the run finished but some archs failed (see summary.json);
2 bad input (config, data, arch list, ground truth, run folder) - one message, nothing written that
looks complete; 1 anything unexpected (or no scorer actor could start: one message naming the cause).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_CRASH, EXIT_BAD_INPUT, EXIT_FAILED_ARCHS = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradsign", description="Score NAS search spaces with GradSign on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="score the archs a config asks for (resumes an unfinished run)")
    score.add_argument("config", help="run config YAML (see configs/)")
    score.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set sample.size=300 (repeatable)")
    report = sub.add_parser("report", help="recompute summary, top-k, report and plots from stored scores")
    report.add_argument("run_dir")
    compare = sub.add_parser("compare", help="proxy x dataset correlation table across run folders")
    compare.add_argument("run_dirs", nargs="+")
    compare.add_argument("--output", help="also write the Markdown table here")
    truth = sub.add_parser("truth", help="convert an official benchmark file into the ground-truth/benchmark table")
    truth_sub = truth.add_subparsers(dest="benchmark", required=True)
    nb201 = truth_sub.add_parser("nb201", help="NAS-Bench-201 v1_0/v1_1 .pth (read once with nas_201_api's classes)")
    nb201.add_argument("file", help="e.g. NAS-Bench-201-v1_1-096897.pth")
    nb201.add_argument("-o", "--output", help="table to write (Parquet); default: the cache that "
                       "ground_truth.path: FILE.pth uses (next to the file, else ~/.cache/gradsign)")
    nb201.add_argument("--trust-pickle", action="store_true",
                       help="unpickle without the allow-list of classes (only for a file you trust)")
    nds = truth_sub.add_parser("nds", help="an NDS file (DARTS/ENAS/Amoeba/NASNet/PNAS .json, CIFAR-10) -> table")
    nds.add_argument("file", help="e.g. DARTS.json (a list of records, or {'top': [...], 'mid': [...]})")
    nds.add_argument("-o", "--output", help="table to write (Parquet); default: FILE with .parquet")
    nds.add_argument("--space", default=None, help="nds-darts | nds-enas | nds-amoeba | nds-nasnet | nds-pnas "
                     "(default: from the file name)")
    search = sub.add_parser("search", help="NAS searches (RS, REA, REINFORCE, BOHB; vanilla and G-variant) on score tables")
    search.add_argument("config", help="search config YAML (see configs/search-*.yaml)")
    search.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set runs=50 (repeatable)")
    return parser


def _print_summary(summary: dict, run_dir: Path) -> None:
    archs = summary["archs"]
    print(f"run folder: {run_dir}")
    print(f"archs: {archs['requested']} requested, {archs['scored']} scored, {archs['failed']} failed"
          + (f", {archs['missing']} missing" if archs["missing"] else ""))
    for proxy, entry in summary["proxies"].items():
        if entry.get("spearman") is not None:
            print(f"{proxy}: spearman {entry['spearman']:.4f}, kendall {entry['kendall']:.4f}, n {entry['n']}")
    if summary.get("wall_seconds") is not None:
        print(f"wall {summary['wall_seconds']:.1f} s, {summary.get('archs_per_second') or 0:.3f} archs/s")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "truth":
        from gradsign.pipeline.official.nb201 import main_nb201

        try:
            if args.benchmark == "nds":
                from gradsign.pipeline.official.nds import main_nds

                return main_nds(args.file, args.output, args.space)
            return main_nb201(args.file, args.output, args.trust_pickle)
        except ValueError as exc:
            print(f"gradsign: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.command == "search":
        from gradsign.pipeline.search_runner.runner import main_search

        return main_search(args.config, args.overrides)
    from gradsign.pipeline.driver import config as config_mod
    from gradsign.pipeline.driver.dispatch import ActorStartError
    from gradsign.pipeline.driver.run import recompute, run

    if args.command == "compare":
        from gradsign.pipeline.outputs.compare import load, table

        try:
            text = table(load([Path(d) for d in args.run_dirs]))
        except (ValueError, FileNotFoundError) as exc:
            print(f"gradsign: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(text, end="")
        if args.output:
            Path(args.output).write_text(text)
        return EXIT_OK
    try:
        if args.command == "score":
            cfg = config_mod.resolve(args.config, args.overrides)
            result = run(cfg)
            summary, run_dir = result.summary, result.run_dir
        else:
            run_dir = Path(args.run_dir)
            summary = recompute(run_dir)
    except (ValueError, FileNotFoundError) as exc:
        print(f"gradsign: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ActorStartError as exc:  # no actor could start: nothing lost, the committed shards stay
        print(f"gradsign: error: {exc}", file=sys.stderr)
        return EXIT_CRASH
    _print_summary(summary, run_dir)
    if summary["archs"]["failed"] or summary["archs"]["missing"]:
        first = summary.get("first_errors") or []
        print(f"gradsign: {summary['archs']['failed']} archs failed; first error: {first[:1]}", file=sys.stderr)
        return EXIT_FAILED_ARCHS
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
