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
  concurrency group, so it never waits behind the actor's queued shards;
- nothing waits on one actor (``Dispatcher``): a start is a probe in flight; while a replacement waits
  for room (its node lost, the cluster full) the other actors keep working, and it is fed once a node
  with room joins; a failed start (constructor raised, no answer within ``actor_start_timeout_s``) is
  tried again after a back-off, so lost capacity comes back with the nodes. When a start fails while no
  actor works and none is starting (none could start, or the last one is lost and its replacement failed),
  the run stops with ``ActorStartError`` naming the cause;
- every result that is ready is handled before any time limit is judged, and an actor lost under a call
  (killed, its node lost or unreachable) is charged as a death (``ActorDiedError``), never a time-out.
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


@dataclass
class Probe:
    """A probe sent to ``actor`` at ``since``: a start (``slot`` None: the actor gets work once it answers)
    or a liveness check of ``slot``'s actor after an error (it keeps its work meanwhile)."""

    actor: object
    since: float
    slot: Slot | None = None
    replacement: bool = False  # a start asked for after the run's first ``target`` ones


class Dispatcher:
    """Runs every job to a committed table with ``num_actors`` scorer actors (see the module docstring).

    One loop, never blocked by an actor: each turn it (1) asks for actors to replace lost capacity (a
    start is a probe in flight, answered in a later turn), (2) fills the working actors' queues, (3)
    waits up to a second for any result or probe, then handles every one that is ready, again until none
    is, (4) drops starts and checks that ran past their time, and only then (5) judges the running tasks'
    time limits. So a replacement that cannot be placed (its node is gone, the cluster is full) holds up
    nothing: the other actors keep working while Ray keeps it pending, and it is placed, probed and fed
    as soon as a node with room joins. A start that failed (its constructor raised, or no answer within
    ``actor_start_timeout_s``) is tried again after a back-off while other actors work; with none working
    an actor is asked for at once, and the run stops with ``ActorStartError`` only when a start has failed
    while no actor worked and none is starting. Results that arrived while the loop was busy are handled
    before any time limit is judged, and a head whose actor is dead (its node lost) is charged as a death
    (``ActorDiedError``), never as a time-out.
    """

    RETRY_FIRST_S = 5.0  # back-off after a failed start: doubles with each failure in a row, up to ...
    RETRY_MAX_S = 300.0
    CHECK_TIMEOUT_S = 30.0  # a liveness check not answered by then: the actor is taken as lost

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
        self.slots: list[Slot] = []  # actors that answered their start probe: they get work
        self.in_flight: dict = {}  # ref -> slot
        self.probes: dict = {}  # probe ref -> Probe (starts and liveness checks)
        self.target = 0  # how many actors the run keeps working (set by run)
        self.asked = 0  # actors asked for so far
        self.failed_starts = 0  # start failures in a row (the back-off); 0 again once one answers
        self.retry_at = 0.0  # no new start before this monotonic time
        self.per_arch_seconds: deque[float] = deque(maxlen=5000)  # the latest measured seconds per arch
        self.devices: list[str] = []
        self.events: list[str] = []  # what went wrong and what was done, for the summary
        self._last_start_cause: str | None = None
        self._ever_started = False  # some actor has answered its start probe
        self._idle_failure = False  # a start failed while no actor worked (since one last answered)

    # -- actors: started, checked, lost, restored; none of it waits ----------------------------------------
    def _starting(self) -> int:
        return sum(1 for p in self.probes.values() if p.slot is None)

    def _start_actor(self) -> None:
        """Ask Ray for one more actor and send its probe; it gets work once the probe answers."""
        actor = self.make_actor()
        ref = actor.device_name.options(concurrency_group=PROBE_GROUP).remote()
        self.probes[ref] = Probe(actor, time.monotonic(), replacement=self.asked >= self.target)
        self.asked += 1

    def _restore_capacity(self) -> None:
        """Start actors for every missing one (lost, or whose start failed once the back-off is over).
        With no actor working and none starting, start at once; stop with ``ActorStartError`` instead
        when a start has already failed while no actor worked."""
        if not self.slots and not self._starting():
            if self._idle_failure:
                what = ("no scorer actor is left and none can start" if self._ever_started
                        else "no scorer actor could start")
                raise ActorStartError(f"{what}: {self._last_start_cause}")
            self.retry_at = 0.0
        if time.monotonic() < self.retry_at:
            return
        for _ in range(self.target - len(self.slots) - self._starting()):
            self._start_actor()

    def _probe_answered(self, ref) -> None:
        probe = self.probes.pop(ref)
        try:
            device = self.ray.get(ref)
        except Exception as exc:  # the constructor raised, the process or its node died
            if probe.slot is None:
                self._start_failed(probe, _first_line(exc))
            elif probe.slot in self.slots:
                self._actor_lost(probe.slot, "its actor stopped answering after an error")
            return
        if probe.slot is not None:  # alive: it keeps its work
            return
        if probe.replacement:
            self.events.append(f"actor started on {device} after {time.monotonic() - probe.since:.1f} s "
                               f"({len(self.slots) + 1} of {self.target} working)")
        self._ever_started, self._idle_failure = True, False
        self.failed_starts, self.retry_at = 0, 0.0
        self.slots.append(Slot(probe.actor, device))
        self.devices.append(device)

    def _start_failed(self, probe: Probe, cause: str) -> None:
        """A start failed: kill it; try again after the back-off (see ``_restore_capacity``)."""
        self._kill(probe.actor)
        self._last_start_cause = cause
        self._idle_failure = self._idle_failure or not self.slots
        self.failed_starts += 1
        wait = min(self.RETRY_MAX_S, self.RETRY_FIRST_S * 2 ** (self.failed_starts - 1))
        self.retry_at = time.monotonic() + wait
        self.events.append(f"actor start failed ({cause}); {len(self.slots)} working, tried again in {wait:.0f} s")

    def _expire_probes(self) -> None:
        """Starts not answered within ``actor_start_timeout_s`` fail; checks not answered in time: lost."""
        now = time.monotonic()
        for ref, probe in list(self.probes.items()):
            if probe.slot is None and now - probe.since > self.r["actor_start_timeout_s"]:
                del self.probes[ref]
                self._start_failed(probe, f"not started within {self.r['actor_start_timeout_s']} s (no node "
                                          f"offers {self.r['num_cpus_per_actor']} CPU and "
                                          f"{self.r['num_gpus_per_actor']} GPU free?)")
            elif probe.slot is not None and now - probe.since > self.CHECK_TIMEOUT_S:
                del self.probes[ref]
                if probe.slot in self.slots:
                    self._actor_lost(probe.slot, "its actor stopped answering after an error")

    def _check_alive(self, slot: Slot) -> None:
        """Send ``slot``'s actor a probe; it is taken as lost if the probe fails or is not answered."""
        ref = slot.actor.device_name.options(concurrency_group=PROBE_GROUP).remote()
        self.probes[ref] = Probe(slot.actor, time.monotonic(), slot)

    def _kill(self, actor) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass

    def _stop_starts(self) -> None:
        """The run is over: starts still pending (e.g. waiting for a node) are cancelled."""
        for probe in self.probes.values():
            if probe.slot is None:
                self._kill(probe.actor)
        self.probes.clear()

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
        """The actor of ``slot`` is gone (or was stopped): charge its running task, requeue the rest, and
        drop the slot; ``_restore_capacity`` asks for its replacement at the next turn of the loop."""
        queued = list(slot.queue)
        slot.queue.clear()
        for ref, _ in queued:
            self.in_flight.pop(ref, None)
        for _, task in reversed(queued[1:]):  # back to the front of the queue, in their order, uncharged
            (self.singles if task.alone else self.jobs).appendleft(task if task.alone else task.job)
        if queued:
            self._charge(queued[0][1], cause)
        self.events.append(f"actor on {slot.device} replaced: {cause}")
        self._kill(slot.actor)
        self.slots.remove(slot)

    def _finished(self, ref) -> None:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        slot = self.in_flight.pop(ref)
        position = next(k for k, (r, _) in enumerate(slot.queue) if r == ref)
        try:
            table = self.ray.get(ref)
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            self._actor_lost(slot, _death_cause(exc))
            return
        except Exception as exc:  # RayTaskError (an exception escaping the scorer), ObjectLostError, ...
            _, task = slot.queue[position]
            del slot.queue[position]
            if position == 0:
                slot.head_since = time.monotonic()
            self._charge(task, f"{type(exc).__name__}: {_first_line(exc)}")
            self._check_alive(slot)
            return
        _, task = slot.queue[position]
        del slot.queue[position]
        if position == 0:
            slot.head_since = time.monotonic()
        self.per_arch_seconds.extend(s for s in table.column("seconds").to_pylist() if s is not None)
        for p, k in zip(task.positions, range(table.num_rows)):
            task.job.results[p] = table.slice(k, 1)
        self._maybe_commit(task.job)

    def _handle(self, ref) -> None:
        if ref in self.in_flight:
            self._finished(ref)
        elif ref in self.probes:
            self._probe_answered(ref)
        # else: a call of an actor already lost (its task was requeued or charged)

    def _collect(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a result or a probe; then handle everything ready, until nothing is."""
        refs = [*self.in_flight, *self.probes]
        if not refs:  # nothing out: only a start's back-off to wait for
            time.sleep(min(timeout, max(0.0, self.retry_at - time.monotonic())))
            return
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout)
        while ready:
            for ref in ready:
                self._handle(ref)
            refs = [*self.in_flight, *self.probes]
            ready = self.ray.wait(refs, num_returns=len(refs), timeout=0)[0] if refs else []

    def _check_time_limits(self) -> None:
        """Stop the running task of every actor past its limit (results already ready were handled)."""
        now = time.monotonic()
        for slot in list(self.slots):
            if slot.queue:
                ref, task = slot.queue[0]
                limit = self._time_limit(task)
                if now - slot.head_since > limit:
                    dead = self._dead_actor_cause(slot)
                    self._actor_lost(slot, dead or f"TimedOut: {len(task.positions)} arch(s) ran past the "
                                                   f"{limit:.0f} s limit")

    def _dead_actor_cause(self, slot: Slot) -> str | None:
        """A death cause when ``slot``'s actor is already dead (e.g. its node was lost), else None."""
        try:
            self.ray.get(slot.actor.device_name.options(concurrency_group=PROBE_GROUP).remote(), timeout=5)
        except self.ray.exceptions.GetTimeoutError:
            return None  # alive but not answering: a hang, a time-out
        except Exception as exc:
            return _death_cause(exc)
        return None

    def run(self) -> list[str]:
        """Score every job; returns the devices of the actors used."""
        self.target = min(self.r["num_actors"], max(1, len(self.jobs)))
        try:
            while self.jobs or self.singles or self.in_flight:
                self._restore_capacity()
                self._fill()
                self._collect(timeout=1.0)
                self._expire_probes()
                self._check_time_limits()
        finally:
            self._stop_starts()
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


def _death_cause(exc: BaseException) -> str:
    """The cause charged for an actor lost under a call: always a death (``ActorDiedError``), never a
    time-out; its node lost when Ray says so, else the actor killed (by its arch, or by a node that died
    before Ray noticed: an actor that cannot be reached, ``ActorUnavailableError``, may be either)."""
    from ray.exceptions import ActorUnavailableError

    if "because its node has died" in str(exc):  # the GCS's words for an actor of a dead node
        return f"ActorDiedError: its node was lost ({type(exc).__name__})"
    if isinstance(exc, ActorUnavailableError):
        return f"ActorDiedError: scoring killed its actor, or its node was lost ({type(exc).__name__})"
    return f"ActorDiedError: scoring killed its actor ({type(exc).__name__})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in reversed(text.splitlines()):  # a RayTaskError ends with the original exception
        if line.strip():
            return line.strip()[:500]
    return type(exc).__name__
