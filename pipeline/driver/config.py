"""Run configs: YAML over defaults, ``--set dotted.key=value`` overrides, validation, env expansion.

Invariants: a resolved config holds every key of ``DEFAULTS`` and no other; an unknown key is an error
that names the valid ones; strings may use ``${VAR}`` or ``${VAR:-default}`` (expanded at load time,
so the stored ``config.yaml`` shows the paths actually used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from ..common.layered import (ConfigError, check_input, check_number, check_output_folder, check_where, layered,
                              merge)

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "space": "nb201",
    "dataset": "cifar10",
    "data": {"path": None, "split": "train", "batch_size": 64, "seed": 0},
    "sample": {"size": None, "seed": 0, "archs": None},
    "proxies": ["gradsign"],
    "proxy_options": {},
    "plugins": [],
    # where: {column: value} selects the table's rows (e.g. {dataset: cifar10}); rows of one arch that
    # differ in a label column are refused unless selected (spaces/ground_truth.py)
    "ground_truth": {"path": None, "column": None, "where": None},
    "ray": {
        "address": None,
        "num_actors": 2,
        "num_cpus_per_actor": 1,
        "num_gpus_per_actor": 0,
        "in_flight_per_actor": 2,
        "max_restarts": 0,
        "max_shard_attempts": 3,
        "object_store_mb": 512,
        "actor_start_timeout_s": 600,
        # a running shard is stopped past max(min_s, factor x rows x p99 seconds per arch so far);
        # before any arch was measured, past max(initial_s, initial_per_arch_s x rows)
        # (72 s an arch: the old 1800 s for a shard of the default 25 rows)
        "shard_timeout": {"initial_s": 1800, "initial_per_arch_s": 72, "min_s": 120, "factor": 20},
    },
    "shard_size": 25,
    # GradSign cells per batched pass (actors/cohort.py; NB201): size 1 = one cell per pass. Not part of a
    # run's identity: scores do not depend on it. memory_mb: per chunk of a cohort's pass (null = 4096).
    "cohort": {"size": 1, "memory_mb": None},
    "topk": 50,
    "topk_by": None,  # a proxy, or a list of proxies (their rank average); default: the first proxy
    "topk_min_distance": None,  # null, or d: a diverse top-k (pipeline/outputs/ranking.py); not a score key
    "seed": 0,
    "precision": "fp32",
    "retry_failed": True,
    "output": None,
    "progress": True,
}

# Keys whose values change the scores (or which archs are scored). A run folder may only be resumed by
# a config that agrees on all of them.
SCORE_KEYS = ("space", "dataset", "data", "sample", "proxies", "proxy_options", "plugins", "seed", "shard_size",
              "precision")
PRECISIONS = ("fp32", "tf32")



def validate(cfg: dict) -> dict:
    """Check types and ranges; fill ``output`` and ``topk_by``; return ``cfg``."""
    for key in ("data.batch_size", "shard_size", "ray.num_actors", "ray.in_flight_per_actor",
                "ray.max_shard_attempts", "ray.object_store_mb"):
        check_number(cfg, key, 1, integer=True)
    for key in ("data.seed", "sample.seed", "seed", "topk", "ray.max_restarts"):
        check_number(cfg, key, 0 if key != "ray.max_restarts" else -1, integer=True)
    check_number(cfg, "sample.size", 1, integer=True, optional=True)
    check_number(cfg, "cohort.size", 1, integer=True)
    check_number(cfg, "cohort.memory_mb", 1, integer=True, optional=True)
    check_number(cfg, "topk_min_distance", 0, integer=True, optional=True)
    by = cfg["topk_by"]
    if by is not None and not (isinstance(by, str) and by) and not (
            isinstance(by, list) and by and all(isinstance(p, str) and p for p in by) and len(set(by)) == len(by)):
        raise ConfigError("config key 'topk_by' must be null, a proxy name or a list of distinct proxy names, "
                          f"got {by!r}")
    for key in ("num_cpus_per_actor", "num_gpus_per_actor"):
        value = cfg["ray"][key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"config key 'ray.{key}' must be a number >= 0, got {value!r}")
    if cfg["ray"]["num_cpus_per_actor"] == 0 and cfg["ray"]["num_gpus_per_actor"] == 0:
        raise ConfigError("an actor needs ray.num_cpus_per_actor > 0 or ray.num_gpus_per_actor > 0")
    proxies = cfg["proxies"]
    if isinstance(proxies, str):
        proxies = cfg["proxies"] = [proxies]
    if not isinstance(proxies, list) or not proxies or not all(isinstance(p, str) for p in proxies):
        raise ConfigError(f"config key 'proxies' must be a non-empty list of proxy names, got {proxies!r}")
    if len(set(proxies)) != len(proxies):
        raise ConfigError(f"config key 'proxies' lists a proxy twice: {proxies}")
    plugins = cfg["plugins"]
    if not isinstance(plugins, list) or not all(isinstance(p, str) and p for p in plugins):
        raise ConfigError(f"config key 'plugins' must be a list of importable module names, got {plugins!r}")
    if not isinstance(cfg["proxy_options"], dict):
        raise ConfigError("config key 'proxy_options' must map proxy names to option mappings")
    for name, options in cfg["proxy_options"].items():
        if not isinstance(options, dict):
            raise ConfigError(f"config key 'proxy_options.{name}' must be a mapping, got {options!r}")
    if cfg["data"]["path"] is None:
        raise ConfigError("config key 'data.path' is required (a .npz batch file or a dataset archive)")
    if cfg["sample"]["archs"] is not None and cfg["sample"]["size"] is not None:
        raise ConfigError("set either 'sample.archs' (a list file) or 'sample.size', not both")
    gt = cfg["ground_truth"]
    if (gt["path"] is None) != (gt["column"] is None):
        raise ConfigError("'ground_truth.path' and 'ground_truth.column' go together: set both or neither")
    check_where(gt["where"], "ground_truth.where")
    check_number(cfg, "ray.actor_start_timeout_s", 0, low_open=True)
    for key in cfg["ray"]["shard_timeout"]:
        check_number(cfg, f"ray.shard_timeout.{key}", 0, low_open=True)
    if not isinstance(cfg["retry_failed"], bool):
        raise ConfigError(f"config key 'retry_failed' must be true or false, got {cfg['retry_failed']!r}")
    if cfg["precision"] not in PRECISIONS:
        raise ConfigError(f"config key 'precision' must be one of {', '.join(PRECISIONS)}, got {cfg['precision']!r}")
    if cfg["output"] is None:
        cfg["output"] = str(Path("runs") / str(cfg["name"]))
    return cfg


def resolve(path: str | Path | None = None, overrides: Iterable[str] = (),
            base: dict | None = None) -> dict:
    """Defaults <- YAML file at ``path`` (if any) <- ``base`` mapping <- ``--set`` overrides; validated."""
    return layered(DEFAULTS, merge, validate, path, overrides, base)


# The config keys that name input files (section, key): a run stores them absolute (``absolute_paths``).
FILE_KEYS = (("data", "path"), ("sample", "archs"), ("ground_truth", "path"))


def absolute_paths(cfg: dict) -> dict:
    """``cfg`` with every input-file key made absolute against the current directory, so the run folder's
    ``config.yaml`` reads the same files from any directory (``report``, ``candidates``, ``search``)."""
    for section, key in FILE_KEYS:
        if cfg[section][key] is not None:
            cfg[section][key] = str(Path(str(cfg[section][key])).absolute())
    return cfg


def stored(run_dir: str | Path) -> dict:
    """The config a run folder stores, resolved. FileNotFoundError when there is none. A folder made before
    paths were stored absolute may hold a relative one; missing from here, it is refused with one
    ConfigError saying what it was relative to and what to do (the directory was not recorded)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    cfg = resolve(path)
    for section, key in FILE_KEYS:
        value = cfg[section][key]
        if value is not None and not Path(str(value)).is_absolute() and not Path(str(value)).exists():
            raise ConfigError(f"{path} stores {section}.{key}: {value}, a path relative to the directory "
                              f"`gradsign score` ran in, and it is not found from {Path.cwd()}: run this command "
                              f"from that directory, or write the absolute path into {path}")
    return cfg


def precheck(cfg: dict) -> dict:
    """What a resolved config can be refused for before torch or Ray load (a fraction of a second): an
    unknown space or dataset, an input file that is not there, an output that cannot be a folder. The
    driver checks the rest (proxies, plugins, file contents) in ``run.prepare``."""
    from gradsign import spaces  # the registry's names: no torch yet
    from gradsign.pipeline.driver.data import dataset_info

    name = cfg["space"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"config key 'space' must be a space name, got {name!r}")
    if not cfg["plugins"] and ":" not in name and name not in spaces.names():  # plugins may register it
        raise ConfigError(f"unknown space {name!r}; valid spaces: {', '.join(spaces.names())} "
                          "(or package.module:Name, or a module listed under plugins that registers one)")
    dataset_info(cfg["dataset"])
    check_input(cfg["data"]["path"], "data.path", "data file")
    check_input(cfg["sample"]["archs"], "sample.archs", "arch list")
    check_input(cfg["ground_truth"]["path"], "ground_truth.path", "ground-truth table")
    check_output_folder(cfg["output"])
    return cfg


def score_identity(cfg: dict) -> dict:
    """The part of a config that decides the scores; equal identities may share a run folder."""
    return {key: cfg[key] for key in SCORE_KEYS}


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


def ground_truth(cfg: dict, space):
    """The ground truth a resolved config names: ``ground_truth.path``'s ``column``, only the rows
    ``ground_truth.where`` selects (``spaces/ground_truth.py``); None without a path. Every loader of a
    run's ground truth (the run, ``report``, ``candidates``, results tables) calls this, so none forgets
    ``where``."""
    gt = cfg["ground_truth"]
    if gt["path"] is None:
        return None
    from gradsign.spaces import ground_truth as gt_loader

    from gradsign.pipeline.official import register_readers

    register_readers()
    return gt_loader.load(gt["path"], gt["column"], space, gt.get("where"))
