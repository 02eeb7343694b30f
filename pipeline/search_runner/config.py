"""Search configs (``gradsign search CONFIG.yaml``): YAML over defaults, ``--set`` overrides, validation.

Same rules as run configs (``pipeline/driver/config.py``): every key has a default, an unknown key is an error
naming the valid ones, strings may use ``${VAR}`` / ``${VAR:-default}``. A few keys take a short form:
``algorithm: rea`` (or a list), ``proxy: gradsign`` (or a list, or null), ``warm_start: PATH`` (= ``{path:
PATH}``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from gradsign.search.run import ALGORITHMS, DEFAULT_PARAMS

from gradsign.pipeline.common.layered import (ConfigError, check_input, check_number, check_output_folder,
                                              check_where, layered, merge)

_DATA = "${GRADSIGN_DATA}"  # unset: shared/data beside the checkout (pipeline/common/layered.py)

DEFAULTS: dict[str, Any] = {
    "name": "search",
    "space": "nb201",
    "scores": None,  # a run folder (config.yaml + scores/*.parquet) or a Parquet/CSV with `arch` + proxy columns
    "proxy": None,  # a score column, a list of them, or null (vanilla algorithms only)
    "proposals": 10,  # N of the G-variants' best-of-N
    "compare_vanilla": True,  # with a proxy, also run the vanilla algorithms on the same seeds
    "charge_proxy": None,  # null | "measured" | seconds per scored arch; set: G-variants run free AND charged
    "warm_start": {"path": None, "count": 10},
    "algorithm": ["random", "rea", "reinforce", "bohb"],
    **{name: copy.deepcopy(params) for name, params in DEFAULT_PARAMS.items() if params},
    "benchmark": {
        "search": {"path": f"{_DATA}/nb201_cifar10_hp12.csv", "valid": "cifar10_valid_12ep",
                   "cost": "train_seconds_12ep", "where": None},
        "final": {"path": f"{_DATA}/nb201_accuracy.csv",
                  "columns": {"cifar10": "cifar10_test", "cifar100": "cifar100_test",
                              "imagenet16-120": "imagenet16_120_test"}, "where": None},
    },
    "budget_seconds": 12000,
    "runs": 500,
    "seed": 0,
    "ray": {"address": None, "num_workers": 2, "runs_per_task": 50, "object_store_mb": 256},
    "output": None,
    "progress": True,
}

# Keys whose value is a free mapping (not merged key by key against defaults).
_FREE = ("benchmark.final.columns",)


def _merge_search(base: dict, override: dict, where: str = "") -> dict:
    for key, value in override.items():
        path = f"{where}{key}"
        if path in _FREE:
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must map dataset names to columns, got {value!r}")
            base[key] = dict(value)
        elif key == "warm_start" and not where and not isinstance(value, dict):
            base[key] = {"path": value, "count": base[key]["count"]}
        elif key in base and isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must be a mapping, got {value!r}")
            _merge_search(base[key], value, f"{path}.")
        else:
            merge(base, {key: value}, where)
    return base




def _names(cfg: dict, key: str, allow_null: bool) -> list:
    value = cfg[key]
    if value is None:
        if not allow_null:
            raise ConfigError(f"config key {key!r} must name at least one, got null")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"config key {key!r} must be a name or a non-empty list of names, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"config key {key!r} lists a name twice: {value}")
    return value


def validate(cfg: dict) -> dict:
    """Check types and ranges, normalise short forms, fill ``output``; return ``cfg``."""
    algorithms = cfg["algorithm"] = _names(cfg, "algorithm", allow_null=False)
    for name in algorithms:
        if name not in ALGORITHMS:
            raise ConfigError(f"unknown algorithm {name!r} in 'algorithm'; valid: {', '.join(ALGORITHMS)}")
    cfg["proxy"] = _names(cfg, "proxy", allow_null=True) or None
    if cfg["proxy"] is not None and cfg["scores"] is None:
        raise ConfigError("config key 'scores' is required when 'proxy' is set (a run folder or a score table)")
    check_number(cfg, "proposals", 1, integer=True)
    check_number(cfg, "budget_seconds", 0, low_open=True)
    check_number(cfg, "runs", 1, integer=True)
    check_number(cfg, "seed", 0, integer=True)
    charge = cfg["charge_proxy"]
    if charge is False:
        charge = cfg["charge_proxy"] = None
    if charge is not None and charge != "measured":
        check_number(cfg, "charge_proxy", 0)
    if charge is not None and cfg["proxy"] is None:
        raise ConfigError("config key 'charge_proxy' needs a 'proxy' (the vanilla algorithms score nothing)")
    if not isinstance(cfg["compare_vanilla"], bool):
        raise ConfigError(f"config key 'compare_vanilla' must be true or false, got {cfg['compare_vanilla']!r}")
    warm = cfg["warm_start"]
    if warm["path"] is not None and not isinstance(warm["path"], str):
        raise ConfigError(f"config key 'warm_start.path' must be a file path or null, got {warm['path']!r}")
    check_number(cfg, "warm_start.count", 1, integer=True)
    check_number(cfg, "rea.population", 1, integer=True)
    check_number(cfg, "rea.tournament", 1, cfg["rea"]["population"], integer=True)
    check_number(cfg, "reinforce.learning_rate", 0, low_open=True)
    check_number(cfg, "reinforce.baseline_momentum", 0, 1)
    if cfg["reinforce"]["baseline_momentum"] >= 1:
        raise ConfigError("config key 'reinforce.baseline_momentum' must be < 1")
    b = cfg["bohb"]
    check_number(cfg, "bohb.eta", 1, low_open=True)
    check_number(cfg, "bohb.min_budget", 0, low_open=True)
    check_number(cfg, "bohb.max_budget", b["min_budget"])
    check_number(cfg, "bohb.iterations", 1, integer=True, optional=True)
    check_number(cfg, "bohb.top_n_percent", 1, 99, integer=True)
    check_number(cfg, "bohb.num_samples", 1, integer=True)
    check_number(cfg, "bohb.random_fraction", 0, 1)
    check_number(cfg, "bohb.bandwidth_factor", 0)
    check_number(cfg, "bohb.min_bandwidth", 0)
    check_number(cfg, "bohb.min_points_in_model", 1, integer=True, optional=True)
    bench = cfg["benchmark"]
    for key in ("path", "valid"):
        if not isinstance(bench["search"][key], str) or not bench["search"][key]:
            raise ConfigError(f"config key 'benchmark.search.{key}' must be a non-empty string")
    cost_columns(bench["search"]["cost"])
    if not isinstance(bench["final"]["path"], str) or not bench["final"]["path"]:
        raise ConfigError("config key 'benchmark.final.path' must be a file path")
    columns = bench["final"]["columns"]
    if not columns or not all(isinstance(k, str) and isinstance(v, str) for k, v in columns.items()):
        raise ConfigError(f"config key 'benchmark.final.columns' must map dataset names to columns, got {columns!r}")
    for part in ("search", "final"):  # a row selection: rows of one arch that differ in a label are refused
        check_where(bench[part]["where"], f"benchmark.{part}.where")
    check_number(cfg, "ray.num_workers", 0, integer=True)
    check_number(cfg, "ray.runs_per_task", 1, integer=True)
    check_number(cfg, "ray.object_store_mb", 64, integer=True)
    if cfg["output"] is None:
        cfg["output"] = str(Path("runs") / str(cfg["name"]))
    return cfg


def cost_columns(cost: Any) -> list[str]:
    """The benchmark columns whose sum a query costs: ``benchmark.search.cost`` is one column name, a list
    of them (``[train_seconds_12ep, valid_seconds_12ep]``) or a string ``"a + b"``; a column named twice is
    refused (it would be charged twice)."""
    if isinstance(cost, str):
        names = [part.strip() for part in cost.split("+")]
    elif isinstance(cost, list):
        names = [c.strip() if isinstance(c, str) else c for c in cost]
    else:
        names = []
    if not names or not all(isinstance(c, str) and c for c in names):
        raise ConfigError("config key 'benchmark.search.cost' must be a column name, a list of column names or "
                          f"'a + b' (a query costs their sum), got {cost!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"config key 'benchmark.search.cost' names a column twice: {cost!r}")
    return names


def resolve(path: str | Path | None = None, overrides: Iterable[str] = (), base: dict | None = None) -> dict:
    """Defaults <- YAML at ``path`` <- ``base`` <- ``--set`` overrides; validated."""
    return layered(DEFAULTS, _merge_search, validate, path, overrides, base)


def precheck(cfg: dict) -> dict:
    """What a resolved search config can be refused for before Ray loads: an unknown space, an input file
    that is not there, an output that cannot be a folder (the contents are checked when read)."""
    from gradsign import search

    try:
        search.get_space(cfg["space"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if cfg["proxy"] is not None:
        check_input(cfg["scores"], "scores", "score table")
    check_input(cfg["benchmark"]["search"]["path"], "benchmark.search.path", "benchmark table")
    check_input(cfg["benchmark"]["final"]["path"], "benchmark.final.path", "benchmark table")
    check_input(cfg["warm_start"]["path"], "warm_start.path", "candidate list")
    check_output_folder(cfg["output"])
    return cfg


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
