"""The search runner and ``gradsign search``: inputs (score tables, run folders, candidate lists), outputs,
identical results for any number of workers (in-process, Ray with 1 and 2 workers), bad configs named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gradsign import spaces
from gradsign.pipeline.search_runner import config as search_config
from gradsign.pipeline.search_runner import runner as search_run
from gradsign.pipeline.cli import main
from gradsign.pipeline.driver.config import ConfigError

SMOKE = "configs/search-nb201-smoke.yaml"


def _sets(data_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [f"scores={data_dir}/nb201_naswot_cifar10.csv",
            f"benchmark.search.path={data_dir}/nb201_cifar10_hp12.csv",
            f"benchmark.final.path={data_dir}/nb201_accuracy.csv", "progress=false",
            f"output={tmp_path / 'out'}", *extra]


def _cfg(data_dir, tmp_path, *extra):
    return search_config.resolve(SMOKE, _sets(data_dir, tmp_path, *extra))


@pytest.mark.ray
def test_results_identical_for_any_number_of_workers(data_dir, tmp_path, ray_cluster):
    tables = []
    for workers in (0, 1, 2):
        cfg = _cfg(data_dir, tmp_path / f"w{workers}", "algorithm=[random, rea, reinforce, bohb]", "runs=5",
                   "budget_seconds=2500", "ray.runs_per_task=2", f"ray.num_workers={workers}",
                   "charge_proxy=1.5")
        result = search_run.run(cfg)
        tables.append((pq.read_table(result.output / "runs.parquet"),
                       pq.read_table(result.output / "trajectories.parquet")))
    runs0, traj0 = tables[0]
    assert runs0.num_rows == 4 * 3 * 5  # 4 algorithms x (vanilla, G, G charged) x 5 runs
    for runs, traj in tables[1:]:
        assert runs.equals(runs0) and traj.equals(traj0)
    # charged G-variants spent proxy seconds; no run went past its budget
    rows = runs0.to_pylist()
    assert all(r["simulated_seconds"] <= 2500 for r in rows)
    assert all((r["proxy_seconds"] > 0) == (r["charge_proxy"] is not None) for r in rows)


@pytest.mark.ray
def test_cli_search_through_ray_writes_every_output(data_dir, tmp_path, ray_cluster, capsys):
    args = ["search", SMOKE]
    for s in _sets(data_dir, tmp_path, "runs=4", "budget_seconds=1500"):
        args += ["--set", s]
    code = main(args)
    assert code == 0
    out = tmp_path / "out"
    for name in ("config.yaml", "runs.parquet", "trajectories.parquet", "summary.json", "report.md",
                 "plots/search.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["variants"]) == {"RS", "G-RS[naswot_score]", "REA", "G-REA[naswot_score]"}
    assert summary["scores"]["naswot_score"]["scored"] == 15625 - 341
    report = (out / "report.md").read_text()
    assert "| REA | 4 |" in report and "optimum" in report
    traj = pq.read_table(out / "trajectories.parquet")
    assert {"variant", "run", "step", "arch", "validation", "simulated_seconds", "best_validation",
            "best_cifar10_test"} <= set(traj.column_names)
    runs = pq.read_table(out / "runs.parquet").to_pylist()
    nb = spaces.get("nb201")
    assert all(nb.arch_id(r["pick_arch"]) == r["pick_arch_id"] for r in runs)
    assert "search folder" in capsys.readouterr().out


def _write_run_folder(path: Path, data_dir: Path) -> Path:
    """A small run folder like `gradsign score` writes: 3 score shards, one failed row, one flagged row."""
    nb = spaces.get("nb201")
    (path / "scores").mkdir(parents=True)
    (path / "config.yaml").write_text("name: tiny\nproxies: [gradsign]\n")
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(15625, size=300, replace=False))
    for k, part in enumerate(np.array_split(ids, 3)):
        n = part.size
        error = [None] * n
        nonfinite = [None] * n
        if k == 0:
            error[0], nonfinite[1] = "RuntimeError: boom", "gradsign:3"
        pq.write_table(pa.table({"arch_id": part, "arch": [nb.arch(int(i)) for i in part],
                                 "gradsign": rng.random(n), "nonfinite": pa.array(nonfinite, pa.string()),
                                 "seconds": np.full(n, 1.25), "error": pa.array(error, pa.string())}),
                       path / "scores" / f"part-{k:05d}.parquet")
    return path


def test_scores_from_a_partial_run_folder_and_a_warm_start_list(data_dir, tmp_path):
    folder = _write_run_folder(tmp_path / "run", data_dir)
    nb = spaces.get("nb201")
    scores = search_run.load_scores(folder, ["gradsign"], nb)["gradsign"]
    assert scores.coverage == 298  # the failed and the flagged row have no usable score
    assert np.nansum(scores.seconds) == pytest.approx(300 * 1.25)
    # a topk.jsonl in reverse rank order: the list is read by rank
    top = pq.read_table(folder / "scores" / "part-00001.parquet").slice(0, 5).to_pylist()
    lines = [json.dumps({"rank": 5 - k, "arch_id": r["arch_id"], "arch": r["arch"]}) for k, r in enumerate(top)]
    (tmp_path / "topk.jsonl").write_text("\n".join(lines) + "\n")
    warm = search_run.load_warm(tmp_path / "topk.jsonl", 3, nb)
    assert warm == [top[4]["arch_id"], top[3]["arch_id"], top[2]["arch_id"]]
    cfg = _cfg(data_dir, tmp_path, f"scores={folder}", "proxy=gradsign", "algorithm=[rea, bohb]", "runs=3",
               "budget_seconds=2000", "ray.num_workers=0", "charge_proxy=measured",
               f"warm_start={tmp_path / 'topk.jsonl'}", "warm_start.count=3")
    result = search_run.run(cfg)
    traj = pq.read_table(result.output / "trajectories.parquet").to_pylist()
    for label in ("REA warm", "G-REA warm", "G-REA charged warm", "BOHB warm", "G-BOHB charged warm"):
        for run in range(3):
            first = [r["arch_id"] for r in traj if r["variant"] == label and r["run"] == run][:3]
            assert first == warm, label
    summary = json.loads((result.output / "summary.json").read_text())
    assert summary["variants"]["G-REA charged warm"]["proxy_seconds"]["mean"] > 0
    assert summary["scores"]["gradsign"]["scored"] == 298


@pytest.mark.parametrize("sets, message", [
    (["algorithms=[rea]"], "unknown config key 'algorithms'"),
    (["algorithm=[rea, dart]"], "unknown algorithm 'dart'"),
    (["proposals=0"], "'proposals' must be >= 1"),
    (["proxy=null", "charge_proxy=measured"], "'charge_proxy' needs a 'proxy'"),
    (["charge_proxy=sometimes"], "'charge_proxy' must be a number"),
    (["rea.tournament=11"], "'rea.tournament' must be <= 10"),
    (["bohb.max_budget=5"], "'bohb.max_budget' must be >= 12"),
    (["budget_seconds=0"], "'budget_seconds' must be > 0"),
    (["runs=1.5"], "'runs' must be an integer"),
    (["reinforce.baseline_momentum=1"], "'reinforce.baseline_momentum' must be < 1"),
    (["ray.num_workers=-1"], "'ray.num_workers' must be >= 0"),
    (["benchmark.final.columns=cifar10"], "'benchmark.final.columns' must map"),
])
def test_bad_configs_are_named(data_dir, tmp_path, sets, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        _cfg(data_dir, tmp_path, *sets)


@pytest.mark.parametrize("sets, message", [
    (["proxy=gradsign"], "has no column 'gradsign'; its columns: index, arch, cifar10_valid"),
    (["scores=/nonexistent/scores.csv"], "score table not found: /nonexistent/scores.csv"),
    (["benchmark.search.valid=cifar10_valid_200ep"], "has no column 'cifar10_valid_200ep'"),
    (["warm_start=/nonexistent/topk.jsonl"], "candidate list not found"),
])
def test_bad_inputs_are_named_before_any_run(data_dir, tmp_path, sets, message, capsys):
    args = ["search", SMOKE]
    for s in _sets(data_dir, tmp_path, "ray.num_workers=0", *sets):
        args += ["--set", s]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs.parquet").exists()


def test_bad_warm_start_line_and_run_folder_without_scores(data_dir, tmp_path):
    nb = spaces.get("nb201")
    bad = tmp_path / "list.txt"
    bad.write_text("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\n|conv~0|+|x|\n")
    with pytest.raises(search_run.ScoreTableError, match="row 1"):
        search_run.load_warm(bad, 5, nb)
    (tmp_path / "empty" / "scores").mkdir(parents=True)
    (tmp_path / "empty" / "config.yaml").write_text("name: x\n")
    with pytest.raises(search_run.ScoreTableError, match="has no committed scores"):
        search_run.load_scores(tmp_path / "empty", ["gradsign"], nb)


# ----------------------------------------------------------------------------------------------------
# The output folder: one search at a time, and a config.yaml only beside the results of that config.

REPO = Path(__file__).resolve().parents[1]
_CLI = "import sys; from gradsign.pipeline.cli import main; sys.exit(main(sys.argv[1:]))"


def _holder_pid(out: Path) -> int | None:
    try:
        return json.loads((out / "driver.lock").read_text()).get("pid")
    except (OSError, ValueError):
        return None


def _describes_its_results(out: Path) -> bool:
    """A folder with a config.yaml holds exactly that config's results (no config: no finished search)."""
    if not (out / "config.yaml").exists():
        return True
    cfg = search_config.resolve(out / "config.yaml")
    summary = json.loads((out / "summary.json").read_text())
    runs = pq.read_table(out / "runs.parquet")
    labels = [v.label for v in search_run.variants(cfg)]
    return (list(summary["variants"]) == labels and summary["runs"] == cfg["runs"]
            and summary["budget_seconds"] == cfg["budget_seconds"] and runs.num_rows == len(labels) * cfg["runs"])


def test_a_second_search_is_refused_and_a_killed_one_leaves_no_stale_config(data_dir, tmp_path, capsys):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    first = search_run.run(_cfg(data_dir, tmp_path, "algorithm=rea", "runs=4", "budget_seconds=2000",
                                "ray.num_workers=0"))
    assert _describes_its_results(first.output)
    before = (out / "config.yaml").read_text()
    # a long second search (BOHB x 300 runs, in its own process) on the same folder
    args = ["search", SMOKE]
    for s in _sets(data_dir, tmp_path, "algorithm=bohb", "proxy=null", "runs=300", "budget_seconds=12000",
                   "ray.num_workers=0"):
        args += ["--set", s]
    proc = subprocess.Popen([sys.executable, "-c", _CLI, *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _holder_pid(out) != proc.pid and (out / "config.yaml").read_text() == before:  # (old code: no lock)
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.05)
        # a third search on the folder while the second holds it: refused, with one message naming the holder
        third = ["search", SMOKE]
        for s in _sets(data_dir, tmp_path, "algorithm=random", "runs=2", "ray.num_workers=0"):
            third += ["--set", s]
        capsys.readouterr()
        assert main(third) == 2
        err = capsys.readouterr().err.strip()
        assert "is held by another driver" in err and f"pid {proc.pid}" in err and "\n" not in err, err
        assert proc.poll() is None  # the second search is still computing: kill it there
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _describes_its_results(out)  # the killed search's config never sits beside other results
    assert not (out / "summary.json").exists() or (out / "config.yaml").exists()
    # killed while computing (it writes nothing before its results are all in memory): the first search's
    # folder is as it was
    assert (out / "config.yaml").read_text() == before
    assert json.loads((out / "summary.json").read_text())["runs"] == 4
    # the kernel dropped the killed holder's lock: the folder is usable at once
    again = search_run.run(_cfg(data_dir, tmp_path, "algorithm=random", "runs=3", "budget_seconds=1500",
                                "ray.num_workers=0"))
    assert _describes_its_results(again.output) and again.summary["runs"] == 3


def test_output_into_a_score_run_folder_is_refused(data_dir, tmp_path, capsys):
    folder = _write_run_folder(tmp_path / "run", data_dir)
    args = ["search", SMOKE]
    for s in _sets(data_dir, tmp_path, "ray.num_workers=0", f"output={folder}"):
        args += ["--set", s]
    assert main(args) == 2
    assert "is a `gradsign score` run folder" in capsys.readouterr().err
    assert (folder / "config.yaml").read_text() == "name: tiny\nproxies: [gradsign]\n"


# ----------------------------------------------------------------------------------------------------
# Benchmark cost as a sum of columns; the committed results' configs


def test_query_cost_may_be_the_sum_of_columns(data_dir, tmp_path):
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(data_dir / "nb201_cifar10_hp12.csv")
    extra = np.linspace(1.0, 9.0, table.num_rows)  # a stand-in validation-time column
    path = tmp_path / "hp12.parquet"
    pq.write_table(table.append_column("valid_seconds_12ep", pa.array(extra)), path)
    nb = spaces.get("nb201")
    ids = np.array([nb.arch_id(a) for a in table.column("arch").to_pylist()])
    train = table.column("train_seconds_12ep").to_numpy()
    one = search_run.load_benchmark(_cfg(data_dir, tmp_path, f"benchmark.search.path={path}"), nb)
    assert np.array_equal(one.cost[ids], train)  # the single-column form is unchanged
    for form in ("[train_seconds_12ep, valid_seconds_12ep]", "train_seconds_12ep + valid_seconds_12ep"):
        cfg = _cfg(data_dir, tmp_path, f"benchmark.search.path={path}", f"benchmark.search.cost={form}",
                   "algorithm=random", "runs=2", "budget_seconds=600", "ray.num_workers=0")
        bench = search_run.load_benchmark(cfg, nb)
        assert np.allclose(bench.cost[ids], train + extra)
    result = search_run.run(cfg)
    assert "charged `train_seconds_12ep` + `valid_seconds_12ep` simulated seconds" in \
        (result.output / "report.md").read_text()
    assert all(r["simulated_seconds"] <= 600 for r in pq.read_table(result.output / "runs.parquet").to_pylist())
    for form, message in (("[]", "must be a column name, a list"), ("a + a", "names a column twice"),
                          ("5", "must be a column name")):
        with pytest.raises(ConfigError, match=message):
            _cfg(data_dir, tmp_path, f"benchmark.search.cost={form}")
    with pytest.raises(search_run.ScoreTableError, match="has no column 'valid_seconds_12ep'"):
        search_run.load_benchmark(_cfg(data_dir, tmp_path, "benchmark.search.cost=[train_seconds_12ep, "
                                       "valid_seconds_12ep]"), nb)


COMMITTED = sorted((REPO / "results" / "search").glob("*/config.yaml"))


def test_every_committed_search_config_loads_and_reruns_as_written(data_dir, tmp_path, monkeypatch):
    """Each results/search/*/config.yaml, as written, from a project root with ../shared beside it: loads,
    names only relative inputs that exist and load, describes the summary beside it; one reruns (2 runs)."""
    assert len(COMMITTED) >= 8
    root = tmp_path / "root"
    (root / "work").mkdir(parents=True)
    (root / "shared").symlink_to(data_dir.parent)  # ../shared, wherever the data lives
    (root / "work" / "results").symlink_to(REPO / "results")
    monkeypatch.chdir(root / "work")
    nb = spaces.get("nb201")
    benchmarks: dict = {}
    for path in COMMITTED:
        where = path.relative_to(REPO)
        cfg = search_config.resolve(where)
        bench = cfg["benchmark"]
        inputs = [cfg["scores"], cfg["warm_start"]["path"], bench["search"]["path"], bench["final"]["path"]]
        for item in filter(None, inputs):
            assert not Path(item).is_absolute() and Path(item).exists(), (where, item)
        assert not Path(cfg["output"]).is_absolute(), where
        summary = json.loads((path.parent / "summary.json").read_text())
        labels = [v.label for v in search_run.variants(cfg)]
        assert list(summary["variants"]) == labels and summary["runs"] == cfg["runs"], where
        assert summary["budget_seconds"] == cfg["budget_seconds"] and summary["seed"] == cfg["seed"], where
        # the inputs load as the runner loads them
        key = (bench["search"]["path"], bench["final"]["path"], str(bench["search"]["cost"]))
        if key not in benchmarks:
            benchmarks[key] = search_run.load_benchmark(cfg, nb)
        scores = search_run.load_scores(cfg["scores"], cfg["proxy"], nb)
        assert {name: s.coverage for name, s in scores.items()} == \
            {name: c["scored"] for name, c in summary["scores"].items()}, where
        if cfg["warm_start"]["path"]:
            assert len(search_run.load_warm(cfg["warm_start"]["path"], cfg["warm_start"]["count"], nb)) == \
                cfg["warm_start"]["count"]
    where = Path("results/search/naswot-warm/config.yaml")
    small = search_config.resolve(where, ["runs=2", "ray.num_workers=0", "progress=false",
                                          f"output={tmp_path / 'rerun'}"])
    result = search_run.run(small)
    assert list(result.summary["variants"]) == [v.label for v in search_run.variants(small)]


@pytest.mark.parametrize("signum", [2, 15])  # SIGINT, SIGTERM
def test_a_signal_while_the_results_are_written_lets_them_all_land(data_dir, tmp_path, capsys, monkeypatch, signum):
    """A real signal to this process while the search writes its plot (the previous results already
    removed): every result file and config.yaml land, then one line and 130 / 143."""
    import os

    sets = _sets(data_dir, tmp_path, "runs=3", "budget_seconds=2000", "ray.num_workers=0")
    argv = ["search", SMOKE, *sum((["--set", s] for s in sets), [])]
    assert main(argv) == 0
    out = tmp_path / "out"
    before = pq.read_table(out / "runs.parquet")
    real_plot = search_run._plot

    def plot_then_signal(*args, **kwargs):
        os.kill(os.getpid(), signum)  # the CLI's handler holds it: the writing block is open
        return real_plot(*args, **kwargs)

    monkeypatch.setattr(search_run, "_plot", plot_then_signal)
    capsys.readouterr()
    assert main(argv) == 128 + signum
    err = capsys.readouterr().err.strip()
    name = "SIGINT" if signum == 2 else "SIGTERM"
    assert re.fullmatch(rf"gradsign: interrupted \({name}\): all \d+ tasks finished and the results were written "
                        rf"whole to {re.escape(str(out))} before stopping; the search is complete", err), err
    for file in ("config.yaml", "runs.parquet", "trajectories.parquet", "summary.json", "report.md"):
        assert (out / file).is_file(), file
    assert pq.read_table(out / "runs.parquet").equals(before)  # the same search, written again whole
