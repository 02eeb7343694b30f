"""The driver: config -> shards -> scorer actors fed by a ``ray.wait`` loop -> committed scores -> outputs.

Exactly-once: a shard's scores are committed by one atomic rename; a rerun of the same config skips every
shard whose score file is complete and scores only the rest. A shard whose actor died is sent to another
actor (the dead one is replaced) up to ``ray.max_shard_attempts`` times; after that its archs are then
tried one at a time, and an arch that still kills its actor is recorded with the error, not retried
forever. Architectures whose scoring raises are recorded by the scorer itself.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

import spaces
from actors import proxies as proxy_registry
from actors.scorer import score_schema
from spaces import ground_truth as gt_loader

from . import config as config_mod
from .data import dataset_info, load_batch
from .progress import Progress
from .reducer import Reducer
from .report import write_outputs
from .shards import iter_shards, part_name, read_arch_list, read_complete, remove_temporaries, write_atomic
from .space_cache import get_space


class RunFolderError(ValueError):
    """The output folder holds a run made with a different score-deciding config."""


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


def prepare(cfg: dict) -> tuple[dict, Path]:
    """Check everything that can be checked before Ray starts; claim (or resume) the run folder."""
    proxy_registry.load_plugins(cfg["plugins"])
    cfg["proxies"] = _expand_proxies(cfg["proxies"])
    for name in cfg["proxy_options"]:
        if name not in cfg["proxies"]:
            raise config_mod.ConfigError(f"proxy_options names {name!r}, which is not in proxies {cfg['proxies']}")
        try:
            proxy_registry.get(name, **cfg["proxy_options"][name])  # bad options fail here, not in an actor
        except TypeError as exc:
            raise config_mod.ConfigError(f"proxy_options.{name}: {exc}") from None
    space = get_space(cfg["space"])  # plugins above may register it; NB101's table from the user's cache
    dataset_info(cfg["dataset"])
    if cfg["sample"]["archs"] is not None:
        read_arch_list(cfg["sample"]["archs"], space)  # a malformed line fails here, before any file is made
    if cfg["topk_by"] is not None and cfg["topk_by"] not in cfg["proxies"]:
        raise config_mod.ConfigError(f"topk_by {cfg['topk_by']!r} is not one of proxies {cfg['proxies']}")
    run_dir = Path(cfg["output"])
    stored = run_dir / "config.yaml"
    if stored.exists():
        previous = config_mod.resolve(stored)
        previous["proxies"] = _expand_proxies(previous["proxies"])
        old, new = config_mod.score_identity(previous), config_mod.score_identity(cfg)
        if old != new:
            differ = [k for k in old if old[k] != new[k]]
            raise RunFolderError(
                f"{run_dir} holds a run with a different config (differs in: {', '.join(differ)}); "
                "set another 'output' or remove that folder"
            )
    return cfg, run_dir


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
    return True


def _make_actor(cfg: dict, batch_ref, labels_ref, num_classes: int):
    import ray

    from actors.scorer import Scorer

    r = cfg["ray"]
    threads = max(1, int(r["num_cpus_per_actor"]))
    remote = ray.remote(Scorer).options(
        num_cpus=r["num_cpus_per_actor"], num_gpus=r["num_gpus_per_actor"],
        max_restarts=r["max_restarts"], max_task_retries=0,
    )
    device = "cuda" if r["num_gpus_per_actor"] > 0 else "cpu"
    return remote.remote(cfg["space"], cfg["proxies"], batch_ref, labels_ref, num_classes, cfg["seed"],
                         device=device, num_threads=threads, proxy_options=cfg["proxy_options"],
                         plugins=cfg["plugins"])


def _failed_rows(shard: pa.Table, proxies: list[str], error: str, key_column: str | None = None) -> pa.Table:
    n = shard.num_rows
    columns = {"arch_id": shard.column("arch_id"), "arch": shard.column("arch")}
    if key_column is not None:
        columns[key_column] = (shard.column(key_column) if key_column in shard.column_names
                               else pa.nulls(n, pa.string()))
    columns.update({p: pa.array([math.nan] * n, pa.float64()) for p in proxies})
    columns.update({"nonfinite": pa.nulls(n, pa.string()), "seconds": pa.array([0.0] * n, pa.float64()),
                    "error": pa.array([error] * n, pa.string())})
    return pa.table(columns, schema=score_schema(proxies, key_column))


def run(cfg: dict) -> RunResult:
    """Score what ``cfg`` asks for; resumable; returns the run folder and its summary."""
    started = time.perf_counter()
    cfg, run_dir = prepare(cfg)
    space = get_space(cfg["space"])
    info = dataset_info(cfg["dataset"])
    batch = load_batch(cfg["data"]["path"], info.name, cfg["data"]["batch_size"], cfg["data"]["seed"],
                       cfg["data"]["split"])
    truth = None
    if cfg["ground_truth"]["path"] is not None:
        truth = gt_loader.load(cfg["ground_truth"]["path"], cfg["ground_truth"]["column"], space)

    (run_dir / "shards").mkdir(parents=True, exist_ok=True)
    (run_dir / "scores").mkdir(exist_ok=True)
    remove_temporaries(run_dir)  # half-written files of a run that was killed
    (run_dir / "config.yaml").write_text(config_mod.dump(cfg))
    schema = score_schema(cfg["proxies"], spaces.key_column(space))
    reducer = Reducer(cfg["proxies"], space, truth, cfg["topk"], cfg["topk_by"])

    # Stream the shards: write each input shard, keep only the indices of those still to score.
    todo: deque[int] = deque()
    sizes: dict[int, int] = {}
    requested = 0
    for index, shard in iter_shards(cfg, space):
        requested += shard.num_rows
        sizes[index] = shard.num_rows
        shard_path = run_dir / "shards" / part_name(index)
        if read_complete(shard_path, shard.num_rows) is None:
            write_atomic(shard, shard_path)
        done = read_complete(run_dir / "scores" / part_name(index), shard.num_rows, schema)
        if done is not None:
            reducer.add(done)
        else:
            todo.append(index)
    resumed = len(sizes) - len(todo)
    before = reducer.scored + reducer.failed

    progress = Progress(total=requested, initial=before, enabled=cfg["progress"])
    devices: list[str] = []
    if todo:
        started_ray = _start_ray(cfg)
        try:
            devices = _dispatch(cfg, run_dir, batch, info.num_classes, todo, sizes, schema, reducer, progress)
        finally:
            progress.close()
            if started_ray:
                import ray

                ray.shutdown()
    wall = time.perf_counter() - started
    this_run = reducer.scored + reducer.failed - before
    facts = {
        "requested": requested,
        "wall_seconds": wall,
        "archs_this_run": this_run,
        "archs_per_second": this_run / wall if wall > 0 else None,
        "shards": len(sizes),
        "shards_resumed": resumed,
        "num_actors": cfg["ray"]["num_actors"],
        "devices": sorted(set(devices)),
        "data": {"source": batch.source, "batch_size": int(batch.labels.shape[0]), "seed": cfg["data"]["seed"],
                 "fingerprint": batch.fingerprint},
    }
    summary = write_outputs(run_dir, cfg, reducer, facts)
    return RunResult(run_dir, summary)


def _dispatch(cfg, run_dir, batch, num_classes, todo, sizes, schema, reducer, progress) -> list[str]:
    """Keep every actor busy with shards until none is left; commit each result as it arrives."""
    import ray
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    r = cfg["ray"]
    images_ref, labels_ref = ray.put(batch.images), ray.put(batch.labels)
    actors = [_make_actor(cfg, images_ref, labels_ref, num_classes) for _ in range(min(r["num_actors"], len(todo)))]
    devices = ray.get([a.device_name.remote() for a in actors])
    in_flight: dict = {}  # ref -> (shard index, actor slot, the actor it went to, single row or None)
    load = [0] * len(actors)
    isolating = [False] * len(actors)
    attempts: dict[int, int] = {}
    singles: deque[tuple[int, int]] = deque()  # (shard, row) tried alone after repeated actor deaths
    single_results: dict[int, dict[int, pa.Table]] = {}

    def read_shard(index: int) -> pa.Table:
        table = read_complete(run_dir / "shards" / part_name(index), sizes[index])
        if table is None:
            raise RuntimeError(f"input shard {part_name(index)} vanished or is corrupt during the run")
        return table

    def commit(index: int, table: pa.Table) -> None:
        write_atomic(table, run_dir / "scores" / part_name(index))
        reducer.add(table)
        progress.update(table.num_rows, failed=reducer.failed)

    def submit(slot: int) -> bool:
        # An arch tried alone has its actor to itself, so a death can only be that arch's doing.
        if isolating[slot]:
            return False
        if singles and load[slot] == 0:
            index, row = singles.popleft()
            rows = read_shard(index).slice(row, 1)
            in_flight[actors[slot].__call__.remote(rows)] = (index, slot, actors[slot], row)
            isolating[slot] = True
        elif todo:
            index = todo.popleft()
            in_flight[actors[slot].__call__.remote(read_shard(index))] = (index, slot, actors[slot], None)
        else:
            return False
        load[slot] += 1
        return True

    while todo or singles or in_flight:
        for slot in range(len(actors)):
            while load[slot] < r["in_flight_per_actor"] and submit(slot):
                pass
        if not in_flight:
            raise RuntimeError("dispatch stalled with work left")  # unreachable: an idle actor takes work
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        ref = ready[0]
        index, slot, actor, row = in_flight.pop(ref)
        load[slot] -= 1
        if row is not None:
            isolating[slot] = False
        try:
            table = ray.get(ref)
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            # Replace the actor once, by the first of its calls that fails (the others find a new one).
            if actor is actors[slot] and (isinstance(exc, ActorDiedError) or not _alive(actor)):
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # already gone
                    pass
                actors[slot] = _make_actor(cfg, images_ref, labels_ref, num_classes)
            if row is not None:  # a single arch that took its actor down again: record it
                single_results.setdefault(index, {})[row] = _failed_rows(
                    read_shard(index).slice(row, 1), cfg["proxies"],
                    f"ActorDiedError: scoring this arch killed its actor ({type(exc).__name__})",
                    spaces.key_column(spaces.get(cfg["space"])))
            else:
                attempts[index] = attempts.get(index, 0) + 1
                if attempts[index] < r["max_shard_attempts"]:
                    todo.appendleft(index)
                else:
                    singles.extend((index, k) for k in range(sizes[index]))
                    single_results[index] = {}
                continue
        else:
            if row is None:
                commit(index, table)
                continue
            single_results[index][row] = table
        if row is not None and len(single_results[index]) == sizes[index]:
            parts = single_results.pop(index)
            commit(index, pa.concat_tables(parts[k] for k in range(sizes[index])))
    return devices


def _alive(actor) -> bool:
    import ray

    try:
        ray.get(actor.device_name.remote(), timeout=60)
        return True
    except Exception:
        return False


def recompute(run_dir: Path) -> dict:
    """Rewrite summary, top-k, report and plots of ``run_dir`` from its config and committed scores."""
    run_dir = Path(run_dir)
    stored = run_dir / "config.yaml"
    if not stored.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    cfg = config_mod.resolve(stored)
    proxy_registry.load_plugins(cfg["plugins"])  # a plugin may define the space
    space = get_space(cfg["space"])
    truth = None
    if cfg["ground_truth"]["path"] is not None:
        truth = gt_loader.load(cfg["ground_truth"]["path"], cfg["ground_truth"]["column"], space)
    schema = score_schema(cfg["proxies"], spaces.key_column(space))
    reducer = Reducer(cfg["proxies"], space, truth, cfg["topk"], cfg["topk_by"])
    requested = 0
    for index, shard in iter_shards(cfg, space):
        requested += shard.num_rows
        done = read_complete(run_dir / "scores" / part_name(index), shard.num_rows, schema)
        if done is not None:
            reducer.add(done)
    previous = run_dir / "summary.json"
    facts = json.loads(previous.read_text()) if previous.is_file() else {}
    keep = ("wall_seconds", "archs_this_run", "archs_per_second", "shards", "shards_resumed", "num_actors",
            "devices", "data")
    facts = {k: facts[k] for k in keep if k in facts}
    return write_outputs(run_dir, cfg, reducer, {"requested": requested, **facts})
