"""The pictures: rank-vs-rank panels with degenerate cells drawn apart and counted, one panel per proxy,
`gradsign compare` on shipped score tables with its heatmap, the search's queries plot. Real tables, no Ray."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from conftest import REPO
from gradsign import spaces
from gradsign.pipeline.cli import main
from gradsign.pipeline.outputs import compare, plots, report
from gradsign.pipeline.outputs.reducer import Reducer
from gradsign.spaces import ground_truth as gt_loader

plt = pytest.importorskip("matplotlib.pyplot")
from matplotlib.image import imread  # noqa: E402

TABLES = REPO / "results" / "nb201"


def accuracy(data_dir, column: str) -> dict[str, float]:
    with open(data_dir / "nb201_accuracy.csv", newline="") as f:
        return {row["arch"]: float(row[column]) for row in csv.DictReader(f)}


def test_compare_reads_a_score_table_as_an_independent_join_does(tmp_path, data_dir, capsys):
    table = pq.read_table(TABLES / "gradsign-cifar100.parquet")
    truth = accuracy(data_dir, "cifar100_test")
    y = [truth[a] for a in table.column("arch").to_pylist()]
    x = table.column("gradsign").to_pylist()
    expected = stats.spearmanr(x, y).statistic, stats.kendalltau(x, y).statistic

    png = tmp_path / "rho.png"
    code = main(["compare", str(TABLES / "gradsign-cifar100.parquet"), "--ground-truth",
                 str(data_dir / "nb201_accuracy.csv"), "--plot", str(png), "--output", str(tmp_path / "t.md")])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"| gradsign | {expected[0]:.3f} | {expected[1]:.3f} | {table.num_rows} |" in printed
    assert "against cifar100_test" in printed and (tmp_path / "t.md").read_text() in printed
    image = imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300

    # the dataset named explicitly, and the same rows read as a run folder's summary would give them
    summary = compare.load([f"cifar100={TABLES / 'gradsign-cifar100.parquet'}"], data_dir / "nb201_accuracy.csv")[0]
    assert summary["proxies"]["gradsign"]["spearman"] == pytest.approx(expected[0], abs=1e-12)
    assert summary["proxies"]["gradsign"]["n"] == table.num_rows


def test_compare_bad_table_input_is_one_message(tmp_path, data_dir, capsys):
    table = str(TABLES / "gradsign-cifar10.parquet")
    assert main(["compare", table]) == 2
    assert "--ground-truth FILE" in capsys.readouterr().err
    unnamed = tmp_path / "scores.parquet"
    pq.write_table(pq.read_table(table).slice(0, 10), unnamed)
    assert main(["compare", str(unnamed), "--ground-truth", str(data_dir / "nb201_accuracy.csv")]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the dataset" in err and f"DATASET={unnamed}" in err and len(err.strip().splitlines()) == 1


def _panel_points(ax) -> list[np.ndarray]:
    return [c.get_offsets() for c in ax.collections]


def test_degenerate_cells_are_drawn_apart_and_counted(data_dir):
    table = pq.read_table(TABLES / "gradsign-cifar10.parquet")
    truth_of = accuracy(data_dir, "cifar10_test")
    scores = np.asarray(table.column("gradsign").to_pylist())
    truth = np.asarray([truth_of[a] for a in table.column("arch").to_pylist()])
    zero = scores == 0
    chance = truth <= 11.0  # 10 classes: chance 10 %, within CHANCE_MARGIN
    assert zero.sum() > 0 and chance.sum() > 0  # the shipped table has both kinds (341 zero-score cells)
    panel = plots.Panel("gradsign", scores, truth, 0.8, 0.6, plots.chance_level(truth, 10))
    fig, ax = plt.subplots()
    plots._draw_panel(ax, panel, "cifar10_test", np.random.default_rng(0))
    main_pts, only_zero, only_chance, both = _panel_points(ax)
    assert len(main_pts) == (~zero & ~chance).sum()
    assert (len(only_zero), len(only_chance), len(both)) == ((zero & ~chance).sum(), (chance & ~zero).sum(),
                                                             (zero & chance).sum())
    assert main_pts.min() >= 0 and main_pts.max() <= 100  # the cloud: ranks, never stretched by outliers
    assert (only_zero[:, 0] < 0).all() and (only_zero[:, 1] >= 0).all()  # left strip
    assert (only_chance[:, 1] < 0).all() and (only_chance[:, 0] >= 0).all()  # bottom strip
    assert ((both < 0).all(axis=1)).all()  # the corner
    texts = " ".join(t.get_text() for t in ax.texts)
    assert f"score = 0 only\n{(zero & ~chance).sum():,} cells" in texts
    assert f"accuracy at chance only: {(chance & ~zero).sum():,} cells" in texts
    assert f"both (score = 0 and chance): {(zero & chance).sum():,}" in texts
    # the legend's count says what it is a part of, as the title's n does
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert f"({(~zero & ~chance).sum():,} of {zero.size:,})" in legend and f"n = {zero.size:,}" in ax.get_title()
    assert ax.get_xlim()[0] > -20 and ax.get_ylim()[1] <= 101
    assert "Spearman \u03c1 0.800, Kendall \u03c4 0.600" in ax.get_title()
    plt.close(fig)


def test_a_run_with_several_proxies_gets_one_figure_with_a_panel_each(tmp_path, data_dir):
    space = spaces.get("nb201")
    c10 = pq.read_table(TABLES / "gradsign-cifar10.parquet").slice(0, 300)
    c100 = pq.read_table(TABLES / "gradsign-cifar100.parquet").slice(0, 300)
    assert c10.column("arch").equals(c100.column("arch"))
    rows = pa.table({"arch_id": c10.column("arch_id"), "arch": c10.column("arch"), "gradsign": c10.column("gradsign"),
                     "gradsign_c100": c100.column("gradsign"), "nonfinite": c10.column("nonfinite"),
                     "error": c10.column("error")})
    truth = gt_loader.load(data_dir / "nb201_accuracy.csv", "cifar10_test", space)
    cfg = {"space": "nb201", "dataset": "cifar10"}
    out = tmp_path / "plots"

    single = Reducer(["gradsign"], space, truth)
    single.add(rows)
    cols = single.columns()
    assert report._plots(cols, single, out, cfg, single.correlations(cols)) == ["plots/gradsign.png"]
    assert not (out / "proxies.png").exists()

    both = Reducer(["gradsign", "gradsign_c100"], space, truth)
    both.add(rows)
    cols = both.columns()
    made = report._plots(cols, both, out, cfg, both.correlations(cols))
    assert made == ["plots/proxies.png", "plots/gradsign.png", "plots/gradsign_c100.png"]
    one, two = imread(out / "gradsign.png"), imread(out / "proxies.png")
    assert two.shape[1] > 1.8 * one.shape[1]  # two panels side by side
    summary = {"name": "t", "space": "nb201", "dataset": "cifar10", "archs": {"requested": 300, "scored": 300,
               "failed": 0, "missing": 0}, "proxies": {}, "plots": made}
    text = report.render_markdown(summary, pa.table({}), {"data": {"batch_size": 8, "seed": 0, "path": "x"}, "seed": 0})
    assert "![plots/proxies.png](plots/proxies.png)" in text and "plots/gradsign.png)" not in text


def test_search_report_plots_the_picks_accuracy_against_queries(tmp_path, data_dir):
    from gradsign.pipeline.search_runner import config as search_config
    from gradsign.pipeline.search_runner import runner

    cfg = search_config.resolve("configs/search-nb201-smoke.yaml", [
        f"scores={data_dir}/nb201_naswot_cifar10.csv", f"benchmark.search.path={data_dir}/nb201_cifar10_hp12.csv",
        f"benchmark.final.path={data_dir}/nb201_accuracy.csv", "progress=false", f"output={tmp_path / 'out'}",
        "runs=3", "budget_seconds=1500", "ray.num_workers=0"])
    result = runner.run(cfg)
    image = imread(result.output / "plots" / "queries.png")
    assert image.shape[1] > image.shape[0]  # one panel per algorithm, side by side
    report = (result.output / "report.md").read_text()
    assert "(plots/queries.png)" in report
    # the curve is the test accuracy of the best-by-validation pick (it can dip), not a best-so-far test accuracy
    assert "best by validation accuracy; it can dip" in report and "best-so-far test" not in report
    assert json.loads((result.output / "summary.json").read_text())["runs"] == 3


def test_compare_table_names_two_runs_of_one_dataset_apart():
    from gradsign.pipeline.outputs import compare

    def summary(name, dataset, rho):
        return {"name": name, "space": "nb201", "dataset": dataset, "data": {"batch_size": 64},
                "archs": {"scored": 10}, "proxies": {"gradsign": {"spearman": rho, "kendall": rho / 2, "n": 10}}}

    header = compare.table([summary("a", "cifar10", 0.8), summary("b", "cifar10", 0.7),
                            summary("c", "cifar100", 0.6)]).splitlines()[0]
    rho_columns = [c.strip() for c in header.strip("|").split("|") if c.strip().endswith(" rho")
                   and not c.strip().startswith("published")]
    assert rho_columns == ["cifar10 a rho", "cifar10 b rho", "cifar100 rho"]
    same = compare.table([summary("a", "cifar10", 0.8), summary("a", "cifar10", 0.8)]).splitlines()[0]
    assert "cifar10 a #1 rho" in same and "cifar10 a #2 rho" in same


def test_search_queries_plot_shows_the_spread_over_runs(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig))
    runs = [np.array([90.0, 92.0, 93.0]), np.array([91.0, 91.5, 94.0]), np.array([89.0, 93.0, 93.5]),
            np.array([92.0, 92.5, 92.5])]
    plots.search_queries([plots.QueryCurve("REA", "rea", runs)], {"rea": "REA"}, tmp_path / "q.png", "test acc.")
    ax = drawn[0].axes[0]
    band = [c for c in ax.collections if c.get_paths()]  # fill_between: one PolyCollection per curve
    assert len(band) == 1
    lows = band[0].get_paths()[0].vertices[:, 1]
    stack = np.vstack(runs)
    assert np.isclose(lows.min(), np.percentile(stack, 25, axis=0).min())
    assert np.isclose(lows.max(), np.percentile(stack, 75, axis=0).max())
    assert "25-75%" in ax.get_legend().get_title().get_text()
