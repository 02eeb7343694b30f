"""Layered YAML configs, shared by ``gradsign score`` and ``gradsign search``.

defaults <- YAML file <- a base mapping <- ``--set dotted.key=value`` overrides, each layer merged by a
function that refuses unknown keys; ``${VAR}`` / ``${VAR:-default}`` expanded at load time (so a stored
``config.yaml`` shows the paths actually used); one ``ConfigError`` naming the key for anything wrong.

Paths: a relative path in a config resolves against the current directory, except that ``${GRADSIGN_DATA}``
(what the shipped configs read their data from) is, when the variable is unset, the absolute folder
``shared/data`` beside the checkout (``default_data_dir()``), so a shipped config runs from any directory.
The input-path and output-path checks below run before torch or Ray load: a mistake is answered at once.
"""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and what is wrong."""


DATA_VAR = "GRADSIGN_DATA"


def default_data_dir() -> Path:
    """``${GRADSIGN_DATA}`` when the variable is unset: ``shared/data`` beside the checkout (absolute)."""
    import gradsign

    return Path(gradsign.__file__).resolve().parents[1].parent / "shared" / "data"


def data_dir_text() -> str:
    """Where ``${GRADSIGN_DATA}`` points now, and why (for messages)."""
    if DATA_VAR in os.environ:
        return f"${DATA_VAR} is set to {os.environ[DATA_VAR]}"
    return f"${DATA_VAR} is unset, so it is {default_data_dir()}"


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        def sub(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if name == DATA_VAR and default is None:
                return str(default_data_dir())
            if default is None:
                raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}})")
            return default
        return _ENV_RE.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


def merge(base: dict, override: dict, where: str = "", opaque: tuple[str, ...] = ("proxy_options",)) -> dict:
    """Merge ``override`` into ``base`` in place; a key not in ``base`` is a ConfigError naming the valid ones.

    Nested mappings merge key by key, except the keys in ``opaque`` (free-form mappings, replaced whole).
    """
    for key, value in override.items():
        path = f"{where}{key}"
        if key not in base:
            valid = ", ".join(f"{where}{k}" for k in base)
            raise ConfigError(f"unknown config key {path!r}; valid keys here: {valid}")
        if isinstance(base[key], dict) and key not in opaque:
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must be a mapping, got {value!r}")
            merge(base[key], value, f"{path}.", opaque)
        else:
            base[key] = value
    return base


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML, so ``null``, ``3`` and ``[x, y]`` work)."""
    if "=" not in text:
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def _nest(keys: list[str], value: Any) -> dict:
    out: Any = value
    for key in reversed(keys):
        out = {key: out}
    return out


def check_number(cfg: dict, dotted: str, low: float | None = None, high: float | None = None,
                 integer: bool = False, optional: bool = False, low_open: bool = False) -> None:
    """The value at ``dotted`` is a finite number (an int if ``integer``) in [low, high] (or (low, high]
    with ``low_open``); None passes when ``optional``. Else one ConfigError naming the key."""
    node = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    value = node[leaf]
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(f"config key {dotted!r} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"config key {dotted!r} must be finite, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"config key {dotted!r} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"config key {dotted!r} must be <= {high}, got {value}")


def layered(defaults: dict, merge, check, path: str | Path | None, overrides: Iterable[str],
            base: dict | None) -> dict:
    """``check(expanded(defaults <- YAML at path <- base <- overrides))``, each layer applied by ``merge``
    (which refuses unknown keys); shared by the run and the search configs."""
    cfg = copy.deepcopy(defaults)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
        merge(cfg, loaded)
    if base:
        merge(cfg, copy.deepcopy(base))
    for text in overrides:
        keys, value = parse_override(text)
        merge(cfg, _nest(keys, value))
    return check(_expand(cfg))


def check_where(where, key: str) -> None:
    """``where`` is null or a mapping of column name -> one scalar value (a row selection)."""
    if where is None:
        return
    if not isinstance(where, dict) or not where or not all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in where.items()):
        raise ConfigError(f"config key {key!r} must map column names to one value each "
                          f"(e.g. {{dataset: cifar10}}), got {where!r}")


def check_input(path: Any, key: str, what: str) -> None:
    """The file (or folder) a config key names exists; else one ConfigError naming the key, where a relative
    path was looked for and where ``${GRADSIGN_DATA}`` points."""
    if path is None:
        return
    p = Path(str(path))
    if p.exists():
        return
    where = "" if p.is_absolute() else f" (relative to the current directory {Path.cwd()})"
    raise ConfigError(f"{what} not found: {path}{where}, from config key {key!r}; the shipped configs read "
                      f"${{{DATA_VAR}}}/...: {data_dir_text()}; point {DATA_VAR} at the folder that holds "
                      "the data files, or set the key to an existing path")


def check_output_folder(path: Any, key: str = "output") -> None:
    """``path`` can be (or become) a folder: neither it nor a folder above it is a file."""
    p = Path(str(path))
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            what = "is a file" if q == p else f"lies under {q}, which is a file"
            raise ConfigError(f"{key} {p} {what}, not a folder: set {key!r} to a folder (--set {key}=DIR)")


def check_output_file(path: Any, option: str) -> None:
    """``path`` can be written as a file: it is not a folder, and no folder above it is a file."""
    p = Path(str(path))
    if p.is_dir():
        raise ConfigError(f"{option} {p} is a folder; give a file name")
    for q in p.parents:
        if q.exists() and not q.is_dir():
            raise ConfigError(f"{option} {p} lies under {q}, which is a file, not a folder")
