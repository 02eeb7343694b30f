"""``gradsign score CONFIG [--set key=value ...]``, ``gradsign report RUN_DIR``, ``gradsign compare RUN_DIR...``,
``gradsign truth nb201 FILE.pth [-o TABLE.parquet]``,
``gradsign search CONFIG [--set key=value ...]``, ``gradsign candidates SOURCE... -o LIST``,
``gradsign report RUN_DIR --topk-distance D`` (the top-k alone, recomputed).

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
    report.add_argument("--topk-distance", type=int, metavar="D",
                        help="only recompute the top-k, diverse at distance D, into RUN_DIR/topk-dD.jsonl/.parquet "
                        "(or --output); the run's own files stay as they are")
    report.add_argument("--topk-by", nargs="+", metavar="PROXY", help="with the top-k only: rank by these proxies "
                        "(several: their rank average)")
    report.add_argument("--topk", type=int, metavar="K", help="with the top-k only: list K archs")
    report.add_argument("--output", "-o", help="with the top-k only: the list file to write (.jsonl or .parquet)")
    cand = sub.add_parser("candidates", help="a candidate list (diverse, ensemble-ranked) from a run folder or score "
                          "tables, without rescoring")
    cand.add_argument("sources", nargs="+", help="a run folder, or score tables (Parquet/CSV: arch or arch_id + "
                      "proxy columns); each proxy is read from the first source that has it")
    cand.add_argument("--by", nargs="+", metavar="PROXY", help="the proxy to rank by; several: their rank average")
    cand.add_argument("--count", type=int, default=50, help="archs to list (default 50)")
    cand.add_argument("--min-distance", type=int, metavar="D", help="diverse: each listed arch at least D from "
                      "every earlier one (the space's distance)")
    cand.add_argument("--space", help="the space of score tables (default: the run folder's)")
    cand.add_argument("--output", "-o", required=True, help="the list to write (.jsonl or .parquet)")
    cand.add_argument("--scores-out", help="also write the joined score table with the ranking column (for "
                      "`gradsign search --set scores=... --set proxy=p1+p2`)")
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
            return main_nb201(args.file, args.output, args.trust_pickle)
        except ValueError as exc:
            print(f"gradsign: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.command == "candidates":
        from gradsign.pipeline.outputs.candidates import main_candidates

        return main_candidates(args.sources, args.space, args.by, args.count, args.min_distance, args.output,
                               args.scores_out)
    if args.command == "report" and any(v is not None for v in (args.topk_distance, args.topk_by, args.topk,
                                                                 args.output)):
        from gradsign.pipeline.outputs.candidates import main_report_topk

        return main_report_topk(args.run_dir, args.topk, args.topk_by, args.topk_distance, args.output)
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
