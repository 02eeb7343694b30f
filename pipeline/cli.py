"""``gradsign score CONFIG [--set key=value ...]``, ``gradsign report RUN_DIR``, ``gradsign compare RUN_DIR...``,
``gradsign truth nb201 FILE.pth [-o TABLE.parquet]``, ``gradsign truth nds FILE.json [-o TABLE.parquet]``,
``gradsign search CONFIG [--set key=value ...]``, ``gradsign candidates SOURCE... -o LIST``,
``gradsign report RUN_DIR --topk-distance D`` (the top-k alone, recomputed).

Exit status: 0 all requested archs scored; 3 the run finished but some archs failed (see summary.json);
2 bad input (config, data, arch list, ground truth, run folder) - one message, nothing written that
looks complete; 1 anything unexpected (or no scorer actor could start: one message naming the cause);
130 / 143 stopped by SIGINT (Ctrl-C) / SIGTERM (``score``, ``search``, ``report``, ``candidates``): one line
saying what state the folder is in, no traceback, and a run folder the same command resumes; outputs that
belong together (summary and top-k, a search's results, a list) land together or not at all
(``pipeline/common/interrupt.py``).
4 the run folder's filesystem refused a write (full: ENOSPC, over quota: EDQUOT, read-only: EROFS) - one
line naming the folder and the cause; what was committed stays, and the same command resumes.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

EXIT_OK, EXIT_CRASH, EXIT_BAD_INPUT, EXIT_FAILED_ARCHS = 0, 1, 2, 3
EXIT_DISK = 4  # the run folder's filesystem is full, over quota or read-only
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def disk_error(exc: BaseException) -> OSError | None:
    """The full-disk / over-quota / read-only error in ``exc`` or its causes, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_message(run_dir, exc: OSError) -> str:
    """One line: the run folder, the cause (and the file when known), and what to do."""
    import os

    where = f" writing {exc.filename}" if exc.filename else ""
    return (f"gradsign: error: run folder {run_dir}: {os.strerror(exc.errno)} ({errno.errorcode[exc.errno]}){where}; "
            "the committed scores are intact: free space (or make the folder writable) and rerun the same "
            "command to resume")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradsign", description="Score NAS search spaces with GradSign on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="score the archs a config asks for (resumes an unfinished run)")
    score.add_argument("config", help="run config YAML (see configs/)")
    score.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set sample.size=300 (repeatable)")
    report = sub.add_parser("report", help="recompute summary, top-k, report and plots from stored scores")
    report.add_argument("run_dir", help="a run folder written by `gradsign score` (its config.yaml and scores/)")
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
    cand.add_argument("--space", help="the space of score tables (default: the first source's when it is a run "
                      "folder, else nb201)")
    cand.add_argument("--output", "-o", required=True, help="the list to write (.jsonl or .parquet)")
    cand.add_argument("--scores-out", help="also write the joined score table with the ranking column (for "
                      "`gradsign search --set scores=... --set proxy=p1+p2`)")
    compare = sub.add_parser("compare", help="proxy x dataset correlation table across run folders or score tables")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR|[DATASET=]TABLE",
                         help="run folders, or whole-space score tables (.parquet/.csv, e.g. results/nb201/*.parquet)")
    compare.add_argument("--output", help="also write the Markdown table here")
    compare.add_argument("--plot", metavar="FILE.png", help="draw the rho table as a heatmap into this PNG")
    compare.add_argument("--ground-truth", metavar="FILE",
                         help="accuracies a score table is compared with (e.g. ../shared/data/nb201_accuracy.csv)")
    compare.add_argument("--column", default="{dataset}_test",
                         help="ground-truth column of a table, {dataset} filled in (default: {dataset}_test)")
    compare.add_argument("--space", default="nb201", help="space of the score tables (default: nb201; a run "
                         "folder's summary is read as it is)")
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
    search = sub.add_parser("search",
                            help="NAS searches (RS, REA, REINFORCE, BOHB; vanilla and G-variant) on score tables")
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


def _interrupted(what: str) -> int:
    """The one line an interrupted command ends with; the conventional exit status (130 / 143)."""
    from gradsign.pipeline.common import interrupt

    print(f"gradsign: interrupted ({interrupt.signal_name()}): {what}", file=sys.stderr, flush=True)
    return interrupt.exit_status()


# A path the user gave that cannot be used as given (a file where a folder must go, or the reverse, or no
# permission): the user's to fix, so one line and exit 2 from every command, never a traceback.
PATH_ERRORS = (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from gradsign.pipeline.official import register_readers

    register_readers()  # ground truth may name an official .pth file
    try:
        if args.command in INTERRUPTIBLE:  # Ctrl-C / SIGTERM end with one line
            from gradsign.pipeline.common import interrupt

            previous = interrupt.install()
            try:
                return _main(args)
            except KeyboardInterrupt as exc:
                return _interrupted(_interrupt_text(args, exc))
            finally:
                interrupt.restore(previous)
        return _main(args)
    except PATH_ERRORS as exc:
        if disk_error(exc) is not None:
            raise
        what = f"cannot use {exc.filename} as given" if exc.filename else "cannot use a path as given"
        print(f"gradsign: error: {what} ({exc.strerror or exc}): a file where a folder must go, a folder where a "
              "file must go, or no permission", file=sys.stderr)
        return EXIT_BAD_INPUT


# The commands whose Ctrl-C / SIGTERM end with one line and the conventional status (130 / 143).
INTERRUPTIBLE = ("score", "search", "report", "candidates")


def _interrupt_text(args: argparse.Namespace, exc: KeyboardInterrupt) -> str:
    """What the folder holds after the stop, and what to do."""
    from gradsign.pipeline.common.interrupt import StoppedAfterWriting

    written = isinstance(exc, StoppedAfterWriting)
    if args.command in ("report", "candidates"):
        if args.command == "report" and any(getattr(args, k, None) is not None for k in
                                             ("topk_distance", "topk_by", "topk", "output")):
            what = "the top-k list"
        elif args.command == "report":
            what = f"the summary, top-k and report of {args.run_dir}"
        else:
            what = f"{args.output}" + (f" and {args.scores_out}" if args.scores_out else "")
        if written:
            return f"finished writing {what} before stopping (each file whole)"
        return f"stopped before writing {what}: nothing was written, the files are as they were"
    committed, shards, run_dir = (getattr(exc, name, None) for name in ("committed", "shards", "run_dir"))
    if args.command == "score" and shards is not None:  # RunInterrupted
        text = f"{committed} of {shards} shards committed in {run_dir}"
        if getattr(exc, "outputs_written", False):
            text += "; its summary, top-k and report were written whole before stopping"
            return text + ("" if committed >= shards else "; rerun the same command to resume")
        if committed >= shards:
            return text + "; its summary and top-k were not written: rerun the same command to write them"
        return text + "; rerun the same command to resume"
    if shards is not None:  # SearchInterrupted
        if getattr(exc, "written", False):
            return (f"all {shards} tasks finished and the results were written whole to {run_dir} before stopping; "
                    "the search is complete")
        return (f"{committed} of {shards} tasks finished in {run_dir}; no results written (the folder is as it "
                "was); rerun the same command to run the search again")
    if args.command == "score":
        return "stopped before scoring started; rerun the same command to resume"
    return "stopped before the search started; rerun the same command to run it"


def _main(args: argparse.Namespace) -> int:
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
    if args.command == "compare":
        from gradsign.pipeline.outputs.compare import heatmap, load, table

        from gradsign.pipeline.common.layered import check_output_file

        try:
            for option, path in (("--output", args.output), ("--plot", args.plot)):
                if path:
                    check_output_file(path, option)
            summaries = load(args.run_dirs, args.ground_truth, args.column, args.space)
            text = table(summaries)
            if args.plot:
                heatmap(summaries, Path(args.plot))
        except (ValueError, FileNotFoundError) as exc:
            print(f"gradsign: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(text, end="")
        if args.output:
            Path(args.output).write_text(text)
        if args.plot:
            print(f"heatmap: {args.plot}")
        return EXIT_OK
    cfg = None
    if args.command == "report" and not (Path(args.run_dir) / "config.yaml").is_file():  # before torch loads
        print(f"gradsign: error: {args.run_dir} is not a run folder (no config.yaml)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "score":  # the config is checked before torch and Ray load: a mistake is answered at once
        from gradsign.pipeline.driver import config as config_mod

        try:
            cfg = config_mod.precheck(config_mod.resolve(args.config, args.overrides))
        except ValueError as exc:
            print(f"gradsign: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    from gradsign.pipeline.driver.dispatch import ActorStartError
    from gradsign.pipeline.driver.run import recompute, run

    run_dir = getattr(args, "run_dir", None)
    try:
        if args.command == "score":
            run_dir = cfg["output"]
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
    except OSError as exc:  # a full disk is the user's to fix, not a crash: one line, its own status
        cause = disk_error(exc)
        if cause is None:
            raise
        print(disk_message(run_dir, cause), file=sys.stderr)
        return EXIT_DISK
    _print_summary(summary, run_dir)
    gt = summary.get("ground_truth")
    if gt is not None and summary["archs"]["scored"] and not gt.get("matched"):
        print(f"gradsign: warning: no scored arch has a finite value in ground-truth column {gt['column']!r} of "
              f"{gt['path']}: no correlations", file=sys.stderr)
    archs = summary["archs"]
    if archs["failed"]:
        first = (summary.get("first_errors") or ["?"])[0]
        print(f"gradsign: {archs['failed']} archs failed; first error: {first}", file=sys.stderr)
    if archs["missing"]:
        print(f"gradsign: {archs['missing']} of {archs['requested']} archs have no committed score file yet; "
              f"`gradsign score` with {Path(run_dir) / 'config.yaml'} scores them", file=sys.stderr)
    if archs["failed"] or archs["missing"]:
        return EXIT_FAILED_ARCHS
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
