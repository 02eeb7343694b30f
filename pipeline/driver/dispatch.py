"""The dispatch loop: scorer actors kept busy with shard jobs; each finished shard committed once.

State, each piece named:
- ``ShardJob``: one shard still to commit: which of its rows need scores (all of them, or the failed rows
  of a committed shard being retried), the score rows received so far, the attempts charged to it;
- ``Task``: rows of one job sent to one actor (the whole job, or one row tried alone);
- ``Slot``: one actor and its queue of tasks in submission order. An actor runs its calls one at a time in
  that order, so the head of the queue is the task that is running, since ``head_since``.

Rules (the invariants the tests hold):
- an actor death (killed, OOM-killed, node lost) or a time-out is charged to the task that was running
  only; the tasks queued behind it go back to the queue uncharged;
- a job charged ``max_shard_attempts`` times is split into single rows, each tried alone on an actor
  with nothing else queued, so a death or a hang can only be that row's doing: the row is recorded as
  failed with that cause, and its neighbours are scored;
- any other error of a call (an exception escaping the scorer, a lost object) is charged the same way and,
  after ``max_shard_attempts``, the task's rows are recorded as failed with that error: never a crash of
  the run, never a retry without end;
- a time-out: a running task is stopped (its actor killed) past ``max(min_s, factor x rows x p99 seconds
  per arch measured so far)``, or ``max(initial_s, initial_per_arch_s x rows)`` before any measurement;
- every actor, first or replacement, answers a probe before it gets work; the probe runs in its own
  concurrency group, so it never waits behind the actor's queued shards. When no actor can start
  (unschedulable, its constructor raises), the run stops at once with ``ActorStartError`` naming the cause.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa


PROBE_GROUP = "probe"


class ActorStartError(RuntimeError):
    """No scorer actor could be started (or none is left): the message names the cause."""


@dataclass
class ShardJob:
    """Shard ``index`` (``size`` rows): ``load()`` gives its base rows (the input shard, or the committed
    scores whose failed rows are redone), read when the job goes out and dropped once it is committed."""

    index: int
    size: int
    load: Callable[[], pa.Table]
    positions: list[int] | None = None  # rows of the base still to score; None = all
    results: dict[int, pa.Table] = field(default_factory=dict)  # position -> one score row
    attempts: int = 0
    _base: pa.Table | None = None

    def __post_init__(self) -> None:
        if self.positions is None:
            self.positions = list(range(self.size))

    @property
    def base(self) -> pa.Table:
        if self._base is None:
            self._base = self.load()
        return self._base

    def release(self) -> None:
        self._base, self.results = None, {}

    def complete(self) -> bool:
        return all(p in self.results for p in self.positions)

    def merged(self, schema: pa.Schema) -> pa.Table:
        """The shard's full score table: new rows where scored now, the committed ones elsewhere."""
        rows = [self.results[p] if p in self.results else self.base.slice(p, 1).select(schema.names)
                for p in range(self.size)]
        return pa.concat_tables([row.cast(schema) for row in rows])


@dataclass
class Task:
    job: ShardJob
    positions: list[int]
    alone: bool  # a single row on an actor with nothing else queued

    def rows(self, columns: list[str]) -> pa.Table:
        table = self.job.base.select([c for c in columns if c in self.job.base.column_names])
        return pa.concat_tables([table.slice(p, 1) for p in self.positions])


@dataclass
class Slot:
    actor: object
    device: str
    queue: deque = field(default_factory=deque)  # (ref, task) in submission order
    head_since: float = 0.0

    def busy_alone(self) -> bool:
        return any(task.alone for _, task in self.queue)


class Dispatcher:
    """Runs every job to a committed table with ``num_actors`` scorer actors (see the module docstring)."""

    def __init__(self, cfg: dict, make_actor: Callable[[], object], commit: Callable[[int, pa.Table], None],
                 schema: pa.Schema, key_column: str | None = None):
        import ray

        self.ray = ray
        self.r = cfg["ray"]
        self.make_actor = make_actor
        self.commit_table = commit
        self.schema = schema
        self.row_columns = ["arch_id", "arch", *([key_column] if key_column else [])]  # what an actor is sent
        self.jobs: deque[ShardJob] = deque()  # whole jobs waiting for an actor
        self.singles: deque[Task] = deque()  # rows of split jobs waiting to be tried alone
        self.slots: list[Slot] = []
        self.in_flight: dict = {}  # ref -> slot
        self.per_arch_seconds: deque[float] = deque(maxlen=5000)  # the latest measured seconds per arch
        self.devices: list[str] = []
        self.events: list[str] = []  # what went wrong and what was done, for the summary
        self._last_start_cause: str | None = None

    # -- actors -----------------------------------------------------------------------------------------
    def _start_actors(self, count: int) -> list[Slot]:
        """Start ``count`` actors; keep those that answer the probe in time; kill the rest."""
        actors = [self.make_actor() for _ in range(count)]
        probes = {a.device_name.options(concurrency_group=PROBE_GROUP).remote(): a for a in actors}
        ready, pending = self.ray.wait(list(probes), num_returns=len(probes), timeout=self.r["actor_start_timeout_s"])
        slots, causes = [], []
        for ref in ready:
            try:
                device = self.ray.get(ref)
                slots.append(Slot(probes[ref], device))
            except Exception as exc:  # the constructor raised, or the process died at start
                causes.append(_first_line(exc))
                self._kill(probes[ref])
        for ref in pending:
            causes.append(f"not started within {self.r['actor_start_timeout_s']} s (no node offers "
                          f"{self.r['num_cpus_per_actor']} CPU and {self.r['num_gpus_per_actor']} GPU free?)")
            self._kill(probes[ref])
        if causes:
            self.events.append(f"{len(causes)} actor start(s) failed: {causes[0]}")
        self._last_start_cause = causes[0] if causes else None
        return slots

    def _kill(self, actor) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass

    def _replace(self, slot: Slot) -> None:
        """Kill ``slot``'s actor; put a probed replacement in its place, or drop the slot."""
        self._kill(slot.actor)
        self.slots.remove(slot)
        new = self._start_actors(1)
        if new:
            self.slots.append(new[0])
            self.devices.append(new[0].device)
        elif not self.slots:
            raise ActorStartError(f"no scorer actor is left and none can start: {self._last_start_cause}")

    # -- work -------------------------------------------------------------------------------------------
    def add(self, job: ShardJob) -> None:
        self.jobs.append(job)

    def _submit(self, slot: Slot, task: Task) -> None:
        if not slot.queue:
            slot.head_since = time.monotonic()
        ref = slot.actor.__call__.remote(task.rows(self.row_columns))
        slot.queue.append((ref, task))
        self.in_flight[ref] = slot

    def _fill(self) -> None:
        for slot in self.slots:
            while True:
                if slot.busy_alone():
                    break
                if self.singles:  # rows tried alone go first: a slot stops taking jobs until it is empty
                    if not slot.queue:
                        self._submit(slot, self.singles.popleft())
                    break
                if not self.jobs or len(slot.queue) >= self.r["in_flight_per_actor"]:
                    break
                job = self.jobs.popleft()
                self._submit(slot, Task(job, list(job.positions), alone=False))

    def _time_limit(self, task: Task) -> float:
        t = self.r["shard_timeout"]
        if not self.per_arch_seconds:  # nothing measured yet: the first limit grows with the task's rows
            return max(float(t["initial_s"]), t["initial_per_arch_s"] * len(task.positions))
        p99 = float(np.percentile(self.per_arch_seconds, 99))
        return max(float(t["min_s"]), t["factor"] * p99 * len(task.positions))

    def _record_failed(self, task: Task, error: str) -> None:
        for p in task.positions:
            row = task.job.base.slice(p, 1)
            task.job.results[p] = failed_rows(row, self.schema, error)
        self._maybe_commit(task.job)

    def _maybe_commit(self, job: ShardJob) -> None:
        if job.complete():
            self.commit_table(job.index, job.merged(self.schema))
            job.release()

    def _charge(self, task: Task, cause: str) -> None:
        """A task failed through ``cause``: retry it, split its job, or record its rows as failed."""
        if task.alone:
            self._record_failed(task, cause)
            return
        job = task.job
        job.attempts += 1
        if job.attempts < self.r["max_shard_attempts"]:
            self.jobs.appendleft(job)
        elif cause.startswith(("ActorDied", "TimedOut")):  # a row may be the culprit: find it alone
            self.singles.extend(Task(job, [p], alone=True) for p in task.positions)
            self.events.append(f"shard {job.index} split into single rows after: {cause}")
        else:
            self._record_failed(task, cause)

    def _actor_lost(self, slot: Slot, cause: str) -> None:
        """The actor of ``slot`` is gone (or was stopped): charge its running task, requeue the rest."""
        queued = list(slot.queue)
        slot.queue.clear()
        for ref, _ in queued:
            self.in_flight.pop(ref, None)
        for _, task in reversed(queued[1:]):  # back to the front of the queue, in their order, uncharged
            (self.singles if task.alone else self.jobs).appendleft(task if task.alone else task.job)
        if queued:
            self._charge(queued[0][1], cause)
        self.events.append(f"actor on {slot.device} replaced: {cause}")
        self._replace(slot)

    def _finished(self, ref) -> None:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        slot = self.in_flight.pop(ref)
        position = next(k for k, (r, _) in enumerate(slot.queue) if r == ref)
        try:
            table = self.ray.get(ref)
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            self._actor_lost(slot, f"ActorDiedError: scoring killed its actor ({type(exc).__name__})")
            return
        except Exception as exc:  # RayTaskError (an exception escaping the scorer), ObjectLostError, ...
            _, task = slot.queue[position]
            del slot.queue[position]
            if position == 0:
                slot.head_since = time.monotonic()
            self._charge(task, f"{type(exc).__name__}: {_first_line(exc)}")
            if not self._alive(slot):
                self._actor_lost(slot, "its actor stopped answering after an error")
            return
        _, task = slot.queue[position]
        del slot.queue[position]
        if position == 0:
            slot.head_since = time.monotonic()
        self.per_arch_seconds.extend(s for s in table.column("seconds").to_pylist() if s is not None)
        for p, k in zip(task.positions, range(table.num_rows)):
            task.job.results[p] = table.slice(k, 1)
        self._maybe_commit(task.job)

    def _alive(self, slot: Slot) -> bool:
        try:
            self.ray.get(slot.actor.device_name.options(concurrency_group=PROBE_GROUP).remote(), timeout=30)
            return True
        except Exception:
            return False

    def _check_time_limits(self) -> None:
        now = time.monotonic()
        for slot in list(self.slots):
            if slot.queue:
                task = slot.queue[0][1]
                limit = self._time_limit(task)
                if now - slot.head_since > limit:
                    self._actor_lost(slot, f"TimedOut: {len(task.positions)} arch(s) ran past the {limit:.0f} s limit")

    def run(self) -> list[str]:
        """Score every job; returns the devices of the actors used."""
        count = min(self.r["num_actors"], max(1, len(self.jobs)))
        self.slots = self._start_actors(count)
        if not self.slots:
            raise ActorStartError(f"no scorer actor could start: {self._last_start_cause}")
        self.devices = [s.device for s in self.slots]
        while self.jobs or self.singles or self.in_flight:
            self._fill()
            ready, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                self._finished(ref)
            self._check_time_limits()
        return self.devices

    def stop(self) -> None:
        """Kill every actor at once (an interrupted run): work in flight is dropped, never committed."""
        for slot in self.slots:
            self._kill(slot.actor)
        self.slots, self.in_flight = [], {}


def failed_rows(shard: pa.Table, schema: pa.Schema, error: str) -> pa.Table:
    """Score rows (``schema``) for ``shard``'s archs: NaN scores, ``error``; identity columns (arch_id,
    arch, a space's key column) copied from ``shard`` where it has them."""
    n = shard.num_rows
    fixed = {"nonfinite": pa.nulls(n, pa.string()), "seconds": pa.array([0.0] * n, pa.float64()),
             "error": pa.array([error] * n, pa.string())}
    columns = {}
    for f in schema:
        if f.name in fixed:
            columns[f.name] = fixed[f.name]
        elif f.type == pa.float64():  # a proxy
            columns[f.name] = pa.array([math.nan] * n, pa.float64())
        else:
            columns[f.name] = shard.column(f.name) if f.name in shard.column_names else pa.nulls(n, f.type)
    return pa.table(columns, schema=schema)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in reversed(text.splitlines()):  # a RayTaskError ends with the original exception
        if line.strip():
            return line.strip()[:500]
    return type(exc).__name__
