"""The search algorithms (pure code): budget accounting, determinism, best-of-N, mutation, warm start,
proxy cost, BOHB's schedule and pick, and the NB201 protocol's facts on the real benchmark tables."""

from __future__ import annotations

import numpy as np
import pyarrow.csv as pacsv
import pytest

from gradsign import search
from gradsign import spaces
from gradsign.search.algorithms import _Adam
from gradsign.search.bohb import budgets, schedule
from gradsign.search.run import ALGORITHMS, DEFAULT_PARAMS

SPACE = search.get_space("nb201")


@pytest.fixture(scope="module")
def bench(data_dir) -> search.Benchmark:
    nb = spaces.get("nb201")

    def arrays(path, *cols):
        t = pacsv.read_csv(path)
        ids = np.array([nb.arch_id(a) for a in t.column("arch").to_pylist()])
        out = []
        for col in cols:
            a = np.full(len(nb), np.nan)
            a[ids] = t.column(col).to_numpy()
            out.append(a)
        return out

    valid, cost = arrays(data_dir / "nb201_cifar10_hp12.csv", "cifar10_valid_12ep", "train_seconds_12ep")
    c10, c100, in16 = arrays(data_dir / "nb201_accuracy.csv", "cifar10_test", "cifar100_test", "imagenet16_120_test")
    return search.Benchmark(valid, cost, {"cifar10": c10, "cifar100": c100, "imagenet16-120": in16})


@pytest.fixture(scope="module")
def naswot(data_dir) -> search.ProxyScores:
    nb = spaces.get("nb201")
    t = pacsv.read_csv(data_dir / "nb201_naswot_cifar10.csv")
    values = np.full(len(nb), np.nan)
    values[[nb.arch_id(a) for a in t.column("arch").to_pylist()]] = t.column("naswot_score").to_numpy()
    return search.ProxyScores("naswot", values, np.full(len(nb), 2.0))


class RecordingTrial(search.Trial):
    """A trial that remembers the query it refused (the one that would have exceeded the budget)."""

    refused: int | None = None

    def query(self, arch, eligible=True):
        try:
            return super().query(arch, eligible)
        except search.BudgetExhausted:
            self.refused = int(arch)
            raise


def _run(algorithm, bench, budget, scores=None, charge=None, seed=0, run=0, warm=(), proposals=10):
    trial = RecordingTrial(bench, budget, scores, proposals, charge)
    rng = np.random.default_rng([seed, run])
    try:
        ALGORITHMS[algorithm](SPACE, trial, rng, DEFAULT_PARAMS[algorithm], warm)
    except search.BudgetExhausted:
        pass
    return trial


def test_space_encoding_matches_canonical_order():
    nb = spaces.get("nb201")
    rng = np.random.default_rng(1)
    for arch_id in [0, 1, 5, 124, 15624, *rng.integers(15625, size=50).tolist()]:
        choices = SPACE.encode(arch_id)
        assert SPACE.decode(choices) == arch_id
        assert tuple(nb201_op for nb201_op in spaces.nb201.Cell.parse(nb.arch(arch_id)).ops) == \
            tuple(spaces.nb201.OPS[c] for c in choices)
    assert (SPACE.encode_many(np.arange(15625)) == np.vstack([SPACE.encode(i) for i in range(15625)])).all()


def test_mutation_changes_exactly_one_edge_with_the_nb201_edge_distribution():
    rng = np.random.default_rng(0)
    hits = np.zeros(6)
    for _ in range(6000):
        parent = SPACE.random(rng)
        child = SPACE.mutate(parent, rng)
        diff = np.flatnonzero(SPACE.encode(parent) != SPACE.encode(child))
        assert diff.size == 1
        hits[diff[0]] += 1
    # node uniform over 1..3, then an input uniform: edge 1<-0 1/3, edges into node 2 1/6, into node 3 1/9
    expected = np.array([1 / 3, 1 / 6, 1 / 6, 1 / 9, 1 / 9, 1 / 9]) * 6000
    assert np.all(np.abs(hits - expected) < 5 * np.sqrt(expected))


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
@pytest.mark.parametrize("guided", [False, True])
def test_budget_accounting_stops_before_exceeding(algorithm, guided, bench, naswot):
    budget = 2500.0
    trial = _run(algorithm, bench, budget, naswot if guided else None, "measured" if guided else None, run=3)
    assert trial.archs and trial.refused is not None
    train = bench.cost[np.asarray(trial.archs)]
    assert trial.spent <= budget
    assert trial.spent == pytest.approx(train.sum() + trial.proxy_spent)
    assert np.all(np.diff(trial.times) > 0) and trial.times[-1] == pytest.approx(trial.spent)
    # the refused query (plus any proxy cost pending for it) would not have fitted
    assert trial.spent + bench.cost[trial.refused] + trial._pending > budget
    if guided:
        # 2 s per distinct scored arch, charged with the next query (the refused one's share is pending)
        assert trial.proxy_spent > 0 and trial.proxy_spent == pytest.approx(2.0 * len(trial._scored) - trial._pending)


def test_trial_charges_each_arch_once_and_refuses_the_query_past_the_budget(bench, naswot):
    trial = search.Trial(bench, 10_000.0, naswot, 3, "measured")
    a, b, c = 100, 200, 300
    trial.best_of([a, b, a])  # two distinct archs scored: 4 s pending
    trial.query(a)
    assert trial.spent == pytest.approx(bench.cost[a] + 4.0) and trial.proxy_spent == pytest.approx(4.0)
    trial.best_of([a, b, c])  # only c is new
    trial.query(b)
    assert trial.proxy_spent == pytest.approx(6.0)
    tight = search.Trial(bench, float(bench.cost[a]) - 1e-6)
    with pytest.raises(search.BudgetExhausted):
        tight.query(a)
    assert tight.archs == [] and tight.spent == 0.0


def test_best_of_picks_the_best_scored_candidate_unscored_last_ties_first(bench):
    values = np.full(15625, np.nan)
    values[[10, 11, 12, 13]] = [1.0, 5.0, 5.0, -3.0]
    scores = search.ProxyScores("p", values)
    trial = search.Trial(bench, 1e9, scores, 4)
    assert trial.best_of([10, 11, 12, 13]) == 11  # tie between 11 and 12: the earlier
    assert trial.best_of([99, 13, 98]) == 13  # unscored archs lose to any score, even a negative one
    assert trial.best_of([99, 98]) == 99  # none scored: the first candidate (the vanilla draw)


def test_g_random_queries_the_best_of_each_draw_of_n(bench, naswot):
    trial = _run("random", bench, 3000, naswot, proposals=7, seed=4, run=2)
    rng = np.random.default_rng([4, 2])
    for arch in trial.archs:
        draw = [SPACE.random(rng) for _ in range(7)]
        scores = naswot.values[draw]
        assert arch == draw[int(np.argmax(np.where(np.isfinite(scores), scores, -np.inf)))]


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_determinism_per_seed_and_run(algorithm, bench, naswot):
    variant = search.Variant(algorithm, "naswot")
    one = search.run_one(SPACE, bench, naswot, variant, DEFAULT_PARAMS[algorithm], 4000, 7, 5)
    two = search.run_one(SPACE, bench, naswot, variant, DEFAULT_PARAMS[algorithm], 4000, 7, 5)
    other = search.run_one(SPACE, bench, naswot, variant, DEFAULT_PARAMS[algorithm], 4000, 7, 6)
    assert one.row == two.row and np.array_equal(one.archs, two.archs)
    assert not np.array_equal(one.archs, other.archs)


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_warm_start_queries_the_candidate_list_first(algorithm, bench, naswot):
    warm = [11, 222, 3333, 4444]
    for scores in (None, naswot):
        trial = _run(algorithm, bench, 3000, scores, warm=warm, run=1)
        assert trial.archs[:4] == warm and len(trial.archs) > 4


def test_bohb_schedule_and_pick_follow_hpbandster(bench):
    params = DEFAULT_PARAMS["bohb"]
    assert budgets(params) == pytest.approx([200 / 9, 200 / 3, 200])
    assert schedule(params, 0) == ([9, 3, 1], pytest.approx([200 / 9, 200 / 3, 200]))
    assert schedule(params, 1)[0] == [3, 1] and schedule(params, 2)[0] == [3] and schedule(params, 3)[0] == [9, 3, 1]
    trial = _run("bohb", bench, 12000, run=9)
    eligible = np.asarray(trial.eligible)
    valids = np.asarray(trial.valids)
    # first cycle: 9 at the lowest rung, the best 3 promoted, the best of those at 200; then 3+1, then 3
    assert eligible[:20].tolist() == [False] * 12 + [True] + [False] * 3 + [True] + [True] * 3
    top3 = np.argsort(-valids[:9], kind="stable")[:3]
    assert trial.archs[9:12] == [trial.archs[i] for i in sorted(top3)]
    # the pick is the best validation among max-budget evaluations (hpbandster's incumbent)
    assert valids[trial.pick()] == valids[eligible].max() and eligible[trial.pick()]


def test_adam_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    start = rng.standard_normal((6, 5))
    ours, adam = start.copy(), _Adam(start.shape, 0.01)
    param = torch.nn.Parameter(torch.tensor(start.copy()))
    opt = torch.optim.Adam([param], lr=0.01)
    for _ in range(20):
        grad = rng.standard_normal((6, 5))
        adam.step(ours, grad)
        param.grad = torch.tensor(grad)
        opt.step()
    assert np.allclose(ours, param.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_nb201_protocol_facts_and_vanilla_rea_reproduces_the_published_mean(bench):
    assert len(bench) == 15625
    best = int(np.argmax(bench.valid))
    assert bench.valid[best] == pytest.approx(84.892) and bench.final["cifar10"][best] == pytest.approx(94.3733)
    assert bench.cost.min() == pytest.approx(32.5, abs=0.1) and bench.cost.max() == pytest.approx(207.6, abs=0.1)
    # 120 vanilla REA runs (a fraction of a second): within ~4 standard errors of the NB201 paper's 93.92 +- 0.30
    rows = [search.run_one(SPACE, bench, None, search.Variant("rea"), DEFAULT_PARAMS["rea"], 12000, 0, r).row
            for r in range(120)]
    c10 = np.array([r["cifar10_test"] for r in rows])
    assert abs(c10.mean() - 93.92) < 4 * 0.30 / np.sqrt(120)
    assert all(r["simulated_seconds"] <= 12000 for r in rows)
    assert 85 < np.mean([r["queries"] for r in rows]) < 120  # ~110 s a query


# ----------------------------------------------------------------------------------------------------
# Planted-optimum benchmarks: the algorithms' learning parts must move toward the good region. (Each test
# fails when that part is switched off: BOHB proposing uniformly at random, REINFORCE's gradient flipped.)


def _planted(signal: np.ndarray) -> search.Benchmark:
    """Every query costs 100 s; the signal is ``signal`` plus a small fixed noise (ties broken)."""
    valid = signal + np.random.default_rng(0).random(SPACE.size)
    return search.Benchmark(valid, np.full(SPACE.size, 100.0), {"cifar10": valid.copy()})


def _new_archs(trial: search.Trial) -> np.ndarray:
    """The archs a run proposed, in order (BOHB's promotions re-query an arch already seen: dropped)."""
    seen: set[int] = set()
    return np.array([a for a in trial.archs if not (a in seen or seen.add(a))])


def test_bohb_model_concentrates_proposals_on_the_good_region():
    codes = SPACE.encode_many(np.arange(SPACE.size))
    bench = _planted(60.0 - 2.0 * codes.sum(axis=1))  # the signal falls with each edge's op index
    good = codes.sum(axis=1) <= 6  # the planted good region: 5.6 % of the space
    fractions = []
    for run in range(16):
        trial = _run("bohb", bench, 100.0 * 400, run=run)  # 400 queries
        assert trial.exhausted and len(trial.archs) == 400
        fractions.append(good[_new_archs(trial)[40:]].mean())  # after the model has its first data
    # uniform proposals (the model switched off) land there 5.6 % of the time; BOHB's about 28 %
    assert np.mean(fractions) > 3 * good.mean(), (np.mean(fractions), good.mean())


def test_reinforce_policy_moves_toward_a_planted_optimum():
    codes = SPACE.encode_many(np.arange(SPACE.size))
    conv = (codes == 3).sum(axis=1)  # edges holding op 3 (nor_conv_3x3): the optimum has 6
    bench = _planted(40.0 + 8.0 * conv)
    params = {"learning_rate": 0.01, "baseline_momentum": 0.9}
    late, early = [], []
    for run in range(4):
        trial = search.Trial(bench, 100.0 * 400)
        with pytest.raises(search.BudgetExhausted):
            ALGORITHMS["reinforce"](SPACE, trial, np.random.default_rng([0, run]), params)
        archs = np.asarray(trial.archs)
        early.append(conv[archs[:50]].mean())
        late.append(conv[archs[-100:]].mean())
    # a uniform policy samples 6 / 5 = 1.2 such edges; the trained one far more, and more than it began with
    assert np.mean(late) > 2 * 1.2 and np.mean(late) > np.mean(early) + 1.0, (early, late)


def test_bohb_runs_until_the_budget_and_a_cap_is_reported_as_ending_early(bench):
    params = DEFAULT_PARAMS["bohb"]
    assert params["iterations"] is None  # the budget rule of every algorithm
    # 40,000 s: more than 50 hyperband iterations' worth of queries for some runs (50 would stop near 38,400 s)
    trial = _run("bohb", bench, 40000, run=0)
    assert trial.exhausted and trial.spent + bench.cost[trial.refused] > 40000
    outcome = search.run_one(SPACE, bench, None, search.Variant("bohb"), params, 40000, 0, 0)
    assert outcome.row["ended_early"] is False and outcome.row["queries"] == len(trial.archs)
    capped = search.run_one(SPACE, bench, None, search.Variant("bohb"), dict(params, iterations=2), 40000, 0, 0)
    assert capped.row["ended_early"] is True and capped.row["queries"] == 9 + 3 + 1 + 3 + 1
    for algorithm in ("random", "rea", "reinforce"):
        row = search.run_one(SPACE, bench, None, search.Variant(algorithm), DEFAULT_PARAMS[algorithm], 3000, 0, 0).row
        assert row["ended_early"] is False


def test_bohb_pick_is_the_best_max_budget_evaluation_not_the_best_seen(bench):
    differ = 0
    for run in range(40):
        trial = _run("bohb", bench, 12000, run=run)
        valids, eligible = np.asarray(trial.valids), np.asarray(trial.eligible)
        assert valids[trial.pick()] == valids[eligible].max()
        differ += valids[trial.pick()] < valids.max()
    assert differ > 0  # some runs saw a better signal at a lower rung that never reached max_budget
