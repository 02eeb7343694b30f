"""The driver: config -> shards -> scorer actors (``pipeline/driver/dispatch.py``) -> committed scores -> outputs.

Exactly-once: a shard's scores are committed by one atomic rename; a rerun skips every shard whose score
file is complete and scores only the rest, plus (``retry_failed: true``, the default) the rows of
committed shards that failed, so a transient failure is never permanent. A folder is resumed only by a
config with the same content identity (``pipeline/driver/identity.py``: data by fingerprint, not by path), and
only by one driver at a time (``pipeline/common/lock.py``). Faults (dead or hung actors, scorer errors) are the
dispatcher's: see its docstring.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from gradsign import spaces
from gradsign.actors import proxies as proxy_registry

from gradsign.pipeline.driver import config as config_mod
from gradsign.pipeline.driver import identity
from gradsign.pipeline.driver.dispatch import Dispatcher, ShardJob
from gradsign.pipeline.driver.identity import RunFolderError  # noqa: F401  (re-exported: callers catch it from here)
from gradsign.pipeline.driver.data import dataset_info, load_batch
from gradsign.pipeline.common import interrupt
from gradsign.pipeline.common.lock import hold_run_folder
from gradsign.pipeline.driver.progress import Progress
from gradsign.pipeline.outputs.candidates import check_topk
from gradsign.pipeline.outputs.reducer import Reducer
from gradsign.pipeline.outputs.report import write_outputs
from gradsign.pipeline.common.atomic import write_atomic, write_text_atomic
from gradsign.pipeline.common import run_folder
from gradsign.pipeline.common.run_folder import (SCORES, Reader, Trust, part_name, record_digest,
                                                 remove_temporaries, score_schema, set_aside, shard_path, verify)
from gradsign.pipeline.driver.shards import iter_shards, read_arch_list, read_complete
from gradsign.pipeline.driver.space_cache import get_space


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM after its cleanup (actors killed, Ray shut down, lock released):
    ``committed`` of ``shards`` score files are complete in ``run_dir``; the same command resumes it.
    ``outputs_written``: the signal came while the summary, top-k and report were written, and all of them
    landed before the stop (else none of this pass did)."""

    def __init__(self, run_dir: Path, committed: int, shards: int, outputs_written: bool = False):
        super().__init__(f"{committed} of {shards} shards committed in {run_dir}")
        self.run_dir, self.committed, self.shards = run_dir, committed, shards
        self.outputs_written = outputs_written


@dataclass
class RunResult:
    run_dir: Path
    summary: dict

    @property
    def complete(self) -> bool:
        archs = self.summary["archs"]
        return archs["failed"] == 0 and archs["missing"] == 0


def _expand_proxies(names: list[str]) -> list[str]:
    if names == ["all"]:  # GradSign first: it ranks the top-k unless topk_by says otherwise
        return sorted(proxy_registry.names(), key=lambda name: (name != "gradsign", name))
    for name in names:
        proxy_registry.get(name)  # raises with the valid names when unknown
    return names


def prepare(cfg: dict) -> tuple[dict, Path, list[int] | None]:
    """Check everything that can be checked before any data is read or Ray starts; return the config,
    the run folder and the arch_ids of ``sample.archs`` (None without a list), read once here."""
    proxy_registry.load_plugins(cfg["plugins"])
    config_mod.absolute_paths(cfg)  # the stored config.yaml then reads the same files from any directory
    cfg["proxies"] = _expand_proxies(cfg["proxies"])
    for name in cfg["proxy_options"]:
        if name not in cfg["proxies"]:
            raise config_mod.ConfigError(f"proxy_options names {name!r}, which is not in proxies {cfg['proxies']}")
        try:
            proxy_registry.get(name, **cfg["proxy_options"][name])  # bad options fail here, not in an actor
        except TypeError as exc:
            raise config_mod.ConfigError(f"proxy_options.{name}: {exc}") from None
    space = get_space(cfg["space"])  # plugins above may register it; NB101's table from the user's cache
    check_sample_size(cfg, space)
    dataset_info(cfg["dataset"])
    arch_ids = None
    if cfg["sample"]["archs"] is not None:  # a malformed line fails here, before any file is made
        arch_ids = read_arch_list(cfg["sample"]["archs"], space)
    check_topk(cfg, space)
    return cfg, Path(cfg["output"]), arch_ids


def check_sample_size(cfg: dict, space) -> None:
    """Refuse a ``sample.size`` larger than the space: it would silently score the whole space (a typo
    costing hours) under an identity that then refuses ``sample.size: null`` for the same cells."""
    size = cfg["sample"]["size"]
    if size is not None and size > len(space):
        raise config_mod.ConfigError(
            f"sample.size {size} is larger than space {cfg['space']!r} ({len(space)} archs): set "
            f"sample.size: null to score the whole space, or at most {len(space)}")


def _load_batch(cfg: dict):
    return load_batch(cfg["data"]["path"], dataset_info(cfg["dataset"]).name, cfg["data"]["batch_size"],
                      cfg["data"]["seed"], cfg["data"]["split"])


def _fingerprint_at(cfg: dict) -> str | None:
    """The batch fingerprint of a stored config, or None when its data cannot be read any more."""
    try:
        return _load_batch(cfg).fingerprint
    except (ValueError, OSError):
        return None


def _arch_ids_of(cfg: dict) -> list[int] | None:
    try:
        return read_arch_list(cfg["sample"]["archs"], get_space(cfg["space"]))
    except (ValueError, OSError):
        return None


def _claim(run_dir: Path, cfg: dict, batch, arch_ids: list[int] | None) -> None:
    """Resume only a folder whose content identity matches (paths may differ); record this invocation."""
    ident = identity.content_identity(cfg, batch.fingerprint, arch_ids)
    previous = identity.stored_identity(run_dir, _fingerprint_at, _arch_ids_of)
    history = identity.check_and_record(run_dir, cfg, ident, previous, _expand_proxies)
    write_text_atomic(run_dir / identity.IDENTITY_FILE, identity.record_text(ident, history))
    write_text_atomic(run_dir / "config.yaml", identity.config_text(cfg, history))


def _start_ray(cfg: dict) -> bool:
    """Connect to ``ray.address`` (or RAY_ADDRESS), else start a local cluster; True if we started it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    address = cfg["ray"]["address"]
    if address is None and "RAY_ADDRESS" not in os.environ:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        need = cfg["ray"]["num_actors"] * cfg["ray"]["num_cpus_per_actor"]
        # address="local": a new cluster even where /tmp/ray/ray_current_cluster names one (ray start)
        ray.init(address="local", num_cpus=max(1, math.ceil(need)), include_dashboard=False,
                 logging_level="warning", object_store_memory=cfg["ray"]["object_store_mb"] * 2**20)
    else:
        ray.init(address=address, logging_level="warning")
    interrupt.reinstall()  # ray.init replaced the CLI's SIGTERM handler with its own
    return True


def _make_actor(cfg: dict, batch_ref, labels_ref, num_classes: int):
    import ray

    from gradsign.actors.scorer import Scorer

    r = cfg["ray"]
    threads = max(1, int(r["num_cpus_per_actor"]))
    # the probe group lets the driver ask an actor whether it lives without queueing behind its shards
    remote = ray.remote(concurrency_groups={"probe": 1})(Scorer).options(
        num_cpus=r["num_cpus_per_actor"], num_gpus=r["num_gpus_per_actor"],
        max_restarts=r["max_restarts"], max_task_retries=0,
    )
    device = "cuda" if r["num_gpus_per_actor"] > 0 else "cpu"
    return remote.remote(cfg["space"], cfg["proxies"], batch_ref, labels_ref, num_classes, cfg["seed"],
                         device=device, num_threads=threads, proxy_options=cfg["proxy_options"],
                         plugins=cfg["plugins"], precision=cfg["precision"], cohort=cfg["cohort"]["size"],
                         cohort_memory_mb=cfg["cohort"]["memory_mb"])


def run(cfg: dict) -> RunResult:
    """Score what ``cfg`` asks for; resumable; returns the run folder and its summary."""
    started = time.perf_counter()
    cfg, run_dir, arch_ids = prepare(cfg)
    space = get_space(cfg["space"])
    info = dataset_info(cfg["dataset"])
    batch = _load_batch(cfg)
    truth = config_mod.ground_truth(cfg, space)

    lock = hold_run_folder(run_dir)  # one driver per run folder: a second one is refused here (pipeline/common/lock.py)
    try:
        _claim(run_dir, cfg, batch, arch_ids)
        (run_dir / "shards").mkdir(parents=True, exist_ok=True)
        (run_dir / SCORES).mkdir(exist_ok=True)
        remove_temporaries(run_dir)  # half-written files of a run that was killed
        trust = Trust.of(run_dir)  # what every committed score file must show (its digest names this run)
        schema = score_schema(cfg["proxies"], spaces.key_column(space))
        reducer = Reducer(cfg["proxies"], space, truth, cfg["topk"], cfg["topk_by"], cfg["topk_min_distance"])

        # Stream the shards: write each input shard; keep only the jobs still to score (input rows are read
        # again from disk when a job goes out, so the driver's memory stays flat however large the space).
        jobs: list[ShardJob] = []
        requested = retried = shards = adopted = 0
        rejected: list[str] = []
        for index, shard in iter_shards(cfg, space):
            requested += shard.num_rows
            shards += 1
            on_disk = read_complete(shard_path(run_dir, index), shard.num_rows)
            if on_disk is None or not on_disk.equals(shard):  # the config decides a shard's rows, not the disk
                write_atomic(shard, shard_path(run_dir, index))
            found = verify(run_dir, index, trust, shard, schema)
            if found.problem is not None:  # never trusted: set aside, scored again below
                set_aside(run_dir, index, found.problem)
                rejected.append(part_name(index))
            elif found.legacy:  # written before digests named their run, and its rows check out: record one
                record_digest(run_dir, index, found.sha256, trust.run)
                adopted += 1
            done = found.table
            failed = ([] if done is None
                      else [k for k, e in enumerate(done.column("error").to_pylist()) if e is not None])
            if done is not None and (not failed or not cfg["retry_failed"]):
                reducer.add(done)
            elif done is not None:  # committed with failed rows: score those rows again
                jobs.append(ShardJob(index, shard.num_rows, _loader(done), failed))
                retried += len(failed)
            else:
                jobs.append(ShardJob(index, shard.num_rows, _shard_loader(run_dir, index, shard.num_rows)))
        resumed = shards - len(jobs)
        before = reducer.scored + reducer.failed

        progress = Progress(total=requested, initial=before, enabled=cfg["progress"])
        devices: list[str] = []
        events: list[str] = []
        if jobs:
            started_ray = _start_ray(cfg)
            try:
                devices, events = _dispatch(cfg, run_dir, trust.run, batch, info.num_classes, jobs, schema, reducer,
                                            progress)
            finally:
                progress.close()
                if started_ray:
                    import ray

                    with interrupt.ray_shutdown_guarded():  # ray.shutdown restores the default SIGTERM action
                        ray.shutdown()
        wall = time.perf_counter() - started
        this_run = reducer.scored + reducer.failed - before
        facts = {
            "requested": requested,
            "wall_seconds": wall,
            "archs_this_run": this_run,
            "archs_per_second": this_run / wall if wall > 0 else None,
            "shards": shards,
            "shards_resumed": resumed,
            "failed_rows_retried": retried,
            "score_files_rejected": len(rejected),
            "rejected_files": rejected[:20],
            "score_files_adopted": adopted,
            "num_actors": cfg["ray"]["num_actors"],
            "devices": sorted(set(devices)),
            "dispatch_events": events[:20],
            "data": {"source": batch.source, "batch_size": int(batch.labels.shape[0]), "seed": cfg["data"]["seed"],
                     "fingerprint": batch.fingerprint},
        }
        summary = write_outputs(run_dir, cfg, reducer, facts)
    except KeyboardInterrupt as exc:  # the finally blocks above ran: actors killed, Ray shut down
        committed = len(list((run_dir / SCORES).glob("part-*.parquet")))
        raise RunInterrupted(run_dir, committed, _shards_requested(cfg, space, arch_ids),
                             isinstance(exc, interrupt.StoppedAfterWriting)) from None
    finally:
        lock.release()
    return RunResult(run_dir, summary)


def _shards_requested(cfg: dict, space, arch_ids: list[int] | None) -> int:
    """How many shards the config asks for (what ``iter_shards`` yields), without listing the archs."""
    size = cfg["sample"]["size"]
    count = len(arch_ids) if arch_ids is not None else min(size, len(space)) if size is not None else len(space)
    return math.ceil(count / cfg["shard_size"])


def _shard_loader(run_dir: Path, index: int, rows: int):
    def load() -> pa.Table:
        table = read_complete(shard_path(run_dir, index), rows)
        if table is None:
            raise RuntimeError(f"input shard {part_name(index)} vanished or is corrupt during the run")
        return table
    return load


def _loader(table: pa.Table):
    return lambda: table


def _dispatch(cfg, run_dir, run, batch, num_classes, jobs, schema, reducer, progress) -> tuple[list[str], list[str]]:
    """Score ``jobs`` with a :class:`Dispatcher`; commit each shard atomically as it completes."""
    import ray

    images_ref, labels_ref = ray.put(batch.images), ray.put(batch.labels)

    def commit(index: int, table: pa.Table) -> None:
        run_folder.commit(run_dir, index, table, run)  # the one writer of score files: digest bound to this run
        reducer.add(table)
        progress.update(table.num_rows, failed=reducer.failed)

    dispatcher = Dispatcher(cfg, lambda: _make_actor(cfg, images_ref, labels_ref, num_classes), commit, schema,
                            key_column=spaces.key_column(get_space(cfg["space"])))
    for job in jobs:
        dispatcher.add(job)
    try:
        devices = dispatcher.run()
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: end the actors now, also on a cluster we only joined
        dispatcher.stop()
        raise
    return devices, dispatcher.events


def recompute(run_dir: Path) -> dict:
    """Rewrite summary, top-k, report and plots of ``run_dir`` from its config and committed scores.

    Holds the folder's lock while it reads and writes, as a driver does: a report beside a running
    ``gradsign score`` is refused at once (``RunFolderBusy``, one line naming the driver), so its outputs
    can never land over, or beside, the driver's own final write."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    lock = hold_run_folder(run_dir)
    try:
        return _recompute_held(run_dir)
    finally:
        lock.release()


def _recompute_held(run_dir: Path) -> dict:
    cfg = config_mod.stored(run_dir)
    proxy_registry.load_plugins(cfg["plugins"])  # a plugin may define the space
    space = get_space(cfg["space"])
    truth = config_mod.ground_truth(cfg, space)
    reducer = Reducer(cfg["proxies"], space, truth, cfg["topk"], cfg["topk_by"], cfg["topk_min_distance"])
    sizes: list[int] = []

    def shards():
        for index, shard in iter_shards(cfg, space):
            sizes.append(shard.num_rows)
            yield index, shard

    reader = Reader(run_dir, score_schema(cfg["proxies"], spaces.key_column(space)))
    for _, table in reader.parts(shards()):  # refuses the folder (ScoreFileError) if a file fails
        if table is not None:
            reducer.add(table)
    requested = sum(sizes)
    if reader.note():
        print(reader.note(), file=sys.stderr)
    previous = run_dir / "summary.json"
    facts = json.loads(previous.read_text()) if previous.is_file() else {}
    keep = ("wall_seconds", "archs_this_run", "archs_per_second", "shards", "shards_resumed",
            "failed_rows_retried", "score_files_rejected", "rejected_files", "score_files_adopted", "num_actors",
            "devices", "dispatch_events", "data")
    facts = {k: facts[k] for k in keep if k in facts}
    return write_outputs(run_dir, cfg, reducer, {"requested": requested, **facts})
