"""Lost actors and lost nodes never stall dispatch.

With real scorer actors: the unit-level tests drive a ``Dispatcher`` in the session cluster and kill its
actors with ``ray.kill``; the last one runs ``tests/node_loss_run.py`` in a process of its own, which
builds a real two-node cluster (two raylets on 127.0.0.1) and removes the worker node in the middle of a
run.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, small_config
from support.processes import descendants

pytestmark = pytest.mark.ray


class Harness:
    """A Dispatcher over the shards of ``cfg`` with real Scorer actors (``_make_actor``); commits are
    kept in memory, with their times; ``on_commit(harness, index)`` runs inside each commit."""

    def __init__(self, cfg: dict, ray, make_actor=None, on_commit=None):
        from gradsign import spaces
        from gradsign.actors.scorer import score_schema
        from gradsign.pipeline.driver.dispatch import Dispatcher, ShardJob
        from gradsign.pipeline.driver.run import _load_batch, _make_actor
        from gradsign.pipeline.driver.shards import iter_shards

        space = spaces.get(cfg["space"])
        batch = _load_batch(cfg)
        refs = ray.put(batch.images), ray.put(batch.labels)
        self.refs = refs
        self.make = lambda: _make_actor(cfg, *refs, 10)
        self.commits: dict[int, list] = {}
        self.times: list[float] = []
        self.on_commit = on_commit
        self.dispatcher = Dispatcher(cfg, make_actor or self.make, self._commit, score_schema(cfg["proxies"]),
                                     key_column=spaces.key_column(space))
        self.shards = list(iter_shards(cfg, space))
        for index, table in self.shards:
            self.add(index, table)
        self.ShardJob = ShardJob

    def add(self, index: int, table) -> None:
        from gradsign.pipeline.driver.dispatch import ShardJob

        self.dispatcher.add(ShardJob(index, table.num_rows, lambda t=table: t))

    def _commit(self, index: int, table) -> None:
        self.commits.setdefault(index, []).append(table)
        self.times.append(time.monotonic())
        if self.on_commit:
            self.on_commit(self, index)

    def scored_once(self) -> bool:
        """Every shard committed exactly once, every row scored (no error)."""
        tables = [t for ts in self.commits.values() for t in ts]
        return (all(len(ts) == 1 for ts in self.commits.values())
                and all(e is None for t in tables for e in t.column("error").to_pylist()))


def _options(cfg, refs, options):
    """A scorer actor as ``_make_actor`` makes it, with extra Ray options (e.g. resources)."""
    import ray

    from gradsign.actors.scorer import Scorer

    r = cfg["ray"]
    remote = ray.remote(concurrency_groups={"probe": 1})(Scorer).options(
        num_cpus=r["num_cpus_per_actor"], max_restarts=0, max_task_retries=0, **options)
    return remote.remote(cfg["space"], cfg["proxies"], *refs, 10, cfg["seed"], device="cpu", num_threads=1,
                         proxy_options=cfg["proxy_options"], plugins=cfg["plugins"], precision=cfg["precision"])


def test_a_lost_actor_is_replaced_without_holding_up_the_others_and_retried_until_it_works(tmp_path, data_dir,
                                                                                          ray_cluster):
    """An actor is killed; its first replacement fails (its constructor raises), the next cannot be
    placed (the cluster is full, as when a node is gone): the other actor goes on committing meanwhile;
    once room comes back the replacement is placed, probed and fed. (Before: the loop waited for the
    replacement's probe up to ``actor_start_timeout_s``, nothing committed meanwhile, and a slot whose
    replacement failed was never tried again.)"""
    ray = ray_cluster

    @ray.remote(num_cpus=0.5)
    class Blocker:  # holds CPU so that no replacement fits
        def ready(self) -> bool:
            return True

    # the two scorer actors take one CPU, the blocker the other: the cluster is full
    cfg = small_config(tmp_path, data_dir, "sample.size=8", "shard_size=1", "ray.num_cpus_per_actor=0.5",
                       "ray.in_flight_per_actor=1", "ray.actor_start_timeout_s=600")
    first = Blocker.options(num_cpus=1).remote()
    ray.get(first.ready.remote(), timeout=120)
    state = {"killed": None, "blocker": None, "failed": None, "released": None, "extra": 0}

    def on_commit(h: Harness, index: int) -> None:
        d = h.dispatcher
        busy = [s for s in d.slots if s.queue]  # the committing actor's queue is empty now
        if state["killed"] is None and not busy:
            return
        if state["killed"] is None:  # kill a working actor, fill its room at once
            ray.kill(busy[0].actor, no_restart=True)
            state["killed"] = time.monotonic()
            state["blocker"] = Blocker.remote()
            ray.get(state["blocker"].ready.remote(), timeout=120)
        elif state["failed"] is None and any("start failed" in e for e in d.events):
            state["failed"] = time.monotonic()
        elif state["released"] is None and state["failed"] and time.monotonic() - state["failed"] > 8:
            ray.kill(state["blocker"], no_restart=True)  # room comes back once the next start waits for it
            state["released"] = time.monotonic()
        if len(d.slots) < 2 and state["extra"] < 2000 and time.monotonic() - state["killed"] < 300:
            state["extra"] += 1  # keep work coming until the replacement works (or the time cap: on a quiet
            # box a one-arch shard commits in ~0.1 s, and the release waits 8 s after the failed start)
            h.add(1000 + state["extra"], h.shards[state["extra"] % len(h.shards)][1])

    made = []

    def make_actor():  # the third actor (the first replacement) fails in its constructor (it needs no room)
        made.append(1)
        broken = {**cfg, "plugins": ["no_such_plugin"], "ray": {**cfg["ray"], "num_cpus_per_actor": 0}}
        return h.make() if len(made) != 3 else _options(broken, h.refs, {})

    h = Harness(cfg, ray, make_actor=make_actor, on_commit=on_commit)
    try:
        h.dispatcher.run()
    finally:
        for blocker in (first, state["blocker"]):
            if blocker is not None:
                ray.kill(blocker)
    after = [t for t in h.times if t > state["killed"]]
    released = state["released"] or math.inf
    print(f"kill -> next commit {after[0] - state['killed']:.1f} s; commits before room came back: "
          f"{len([t for t in after if t < released])}; events {h.dispatcher.events}")
    assert len(h.dispatcher.slots) == 2, "the lost actor's capacity was never restored"
    assert state["released"] is not None, "no commit while the next replacement waited for room"
    assert any(e.startswith("actor started") and "(2 of 2 working)" in e for e in h.dispatcher.events)
    failed = [e for e in h.dispatcher.events if "start failed" in e]
    assert len(failed) == 1 and "no_such_plugin" in failed[0]
    assert h.scored_once() and set(h.commits) >= {i for i, _ in h.shards}


def test_ready_results_are_handled_before_time_limits_and_a_death_is_charged_as_one(tmp_path, data_dir,
                                                                                    ray_cluster):
    """The loop is busy for longer than the time limit (one slow commit, as on slow shared storage) while
    one actor dies and another's result is ready: the dead one is charged as a death, the ready result is
    taken, nobody is killed as TimedOut. (Before: one ready result was handled per turn, then every other
    running task was judged by a stale start time: healthy and dead actors alike were "TimedOut".)"""
    ray = ray_cluster
    cfg = small_config(tmp_path, data_dir, "plugins=[faulty_proxies]", "proxies=[gradsign, sleeps]",
                       "proxy_options={sleeps: {seconds: 2}}", "sample.size=6", "shard_size=1",
                       "ray.num_actors=3", "ray.num_cpus_per_actor=0.5", "ray.in_flight_per_actor=1",
                       "ray.shard_timeout={initial_s: 600, min_s: 10, factor: 1}")
    state = {"victim": None}

    def on_commit(h: Harness, index: int) -> None:
        busy = [s for s in h.dispatcher.slots if s.queue]  # the committing actor's queue is empty now
        if state["victim"] is None and busy:
            state["victim"] = busy[0]
            ray.kill(busy[0].actor, no_restart=True)
            time.sleep(15)  # a slow commit: past the 10 s limit of every task still running

    h = Harness(cfg, ray, on_commit=on_commit)
    h.dispatcher.run()
    events = h.dispatcher.events
    print(events)
    assert state["victim"] is not None, "no other actor was busy at any commit"
    assert not any("TimedOut" in e for e in events), events
    assert [e for e in events if "replaced" in e] == [next(e for e in events if "replaced" in e)]
    assert "ActorDiedError" in next(e for e in events if "replaced" in e)
    assert h.scored_once() and set(h.commits) == {i for i, _ in h.shards}


@pytest.mark.slow
def test_a_worker_node_lost_mid_run_on_a_real_two_node_cluster(tmp_path, data_dir):
    """Two raylets on this machine, one actor on each; the worker node is removed (SIGKILL, no grace)
    once the first shard is committed and its actor is busy with a shard (on a loaded machine it may not
    have started yet: then its loss is a failed start, not a death), and a new one joins after three more
    commits. Every arch is
    scored once, equal to a clean run; the survivor kept committing while the node was gone; the lost
    actor is charged as a death; nobody timed out."""
    archs = 20
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "node_loss_run.py"), str(data_dir),
                             str(tmp_path), str(archs)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        for pid in [*descendants(proc.pid), proc.pid]:  # the script and every raylet/worker it started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.communicate()
        raise AssertionError("the run with a lost node did not finish within 420 s")
    assert proc.returncode == 0, err[-3000:]
    f = json.loads(out.strip().splitlines()[-1])
    print({k: v for k, v in f.items() if k not in ("lossy", "clean")})
    assert f["killer_error"] is None
    assert 1 <= f["commits_before_death"] < archs // 2  # the node died mid-run
    assert f["rejoined_by"] == "commits", "nothing was committed while the node was gone: dispatch stalled"
    lossy, clean = f["lossy"], f["clean"]
    assert lossy["arch_id"] == clean["arch_id"] == sorted(set(clean["arch_id"])) and len(clean["arch_id"]) == archs
    assert lossy["gradsign"] == clean["gradsign"] and lossy["error"] == [None] * archs
    assert f["archs_summary"] == {"requested": archs, "scored": archs, "failed": 0, "missing": 0}
    deaths = [e for e in f["events"] if "replaced" in e]
    assert deaths and all("ActorDiedError" in e for e in deaths)
    assert not any("TimedOut" in e for e in f["events"])
