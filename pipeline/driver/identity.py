"""What decides a run folder's scores, by content: which invocations may resume it.

A run folder may be resumed by any config whose *content identity* equals the folder's:
- the data batch by its fingerprint (sha256 of the normalised images and the labels actually drawn),
  with split, batch size and seed; never by the path it was read from;
- the archs by their list: sample size and seed, or the digest of the arch_ids an arch-list file names
  (never the file's path);
- space, dataset, proxies, proxy options, plugin module names, run seed, shard size, precision.
Paths may change (the folder moved, the data mounted elsewhere, another node): the folder keeps a history
of the paths each invocation used in ``identity.json`` (also as comments in ``config.yaml``).

``identity.json``: ``{"identity": {...}, "paths": [{"at": UTC time, "data.path": ..., "sample.archs": ...,
"ground_truth.path": ...}, ...]}``. A folder made before this file existed is identified from its stored
config: its data is fingerprinted at the stored path if that still reads, else from the fingerprint its
``summary.json`` recorded; when neither is possible the resume is refused, not guessed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from gradsign.pipeline.common.run_folder import IDENTITY
from gradsign.pipeline.driver import config as config_mod

IDENTITY_FILE = IDENTITY  # the run folder module owns the layout
PATH_KEYS = config_mod.FILE_KEYS


class RunFolderError(ValueError):
    """The output folder holds a run whose scores were decided by different content."""


def content_identity(cfg: dict, fingerprint: str, arch_ids: list[int] | None) -> dict:
    """The content that decides the scores of ``cfg`` (``arch_ids``: those of an arch-list file, if any)."""
    ident = {k: cfg[k] for k in config_mod.SCORE_KEYS if k not in ("data", "sample")}
    data = cfg["data"]
    ident["data"] = {"fingerprint": fingerprint, "split": data["split"], "batch_size": data["batch_size"],
                     "seed": data["seed"]}
    sample = cfg["sample"]
    archs = None
    if arch_ids is not None:
        archs = hashlib.sha256(",".join(map(str, arch_ids)).encode()).hexdigest()[:16]
    ident["sample"] = {"size": sample["size"], "seed": sample["seed"], "archs_digest": archs}
    return ident


def paths_of(cfg: dict) -> dict:
    return {".".join(k): cfg[k[0]][k[1]] for k in PATH_KEYS}


def describe_difference(old: dict, new: dict) -> str:
    """One line naming every differing part (for data: the two fingerprints)."""
    parts = []
    for key in new:
        if old.get(key) == new[key]:
            continue
        if key == "data" and old.get("data", {}).get("fingerprint") != new["data"]["fingerprint"]:
            parts.append(f"data (batch fingerprint {old.get('data', {}).get('fingerprint')} in the folder, "
                         f"{new['data']['fingerprint']} now)")
        elif key == "sample" and (old.get("sample") or {}).get("archs_digest") != new["sample"]["archs_digest"]:
            parts.append(f"sample (arch list {old.get('sample', {}).get('archs_digest')} in the folder, "
                         f"{new['sample']['archs_digest']} now)")
        else:
            parts.append(f"{key} ({old.get(key)!r} in the folder, {new[key]!r} now)")
    return ", ".join(parts)


def stored_identity(run_dir: Path, fingerprint_at, arch_ids_of) -> tuple[dict, list[dict]] | None:
    """(identity, path history) of the run in ``run_dir``, or None when it holds no run.

    ``fingerprint_at(cfg) -> str | None`` fingerprints a stored config's batch (None if unreadable);
    ``arch_ids_of(cfg) -> list | None`` lists its arch-list file's ids (None if no list or unreadable).
    """
    record = run_dir / IDENTITY_FILE
    if record.is_file():
        stored = json.loads(record.read_text())
        return stored["identity"], stored.get("paths", [])
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        return None
    previous = config_mod.resolve(config_file)
    fingerprint = fingerprint_at(previous)
    if fingerprint is None:
        summary = run_dir / "summary.json"
        if summary.is_file():
            fingerprint = (json.loads(summary.read_text()).get("data") or {}).get("fingerprint")
    if fingerprint is None:
        raise RunFolderError(
            f"{run_dir} was made before run folders recorded their data fingerprint, and its batch at "
            f"{previous['data']['path']} cannot be read to check it: put the data back there once, or set "
            "another 'output'")
    arch_ids = None
    if previous["sample"]["archs"] is not None:
        arch_ids = arch_ids_of(previous)
        if arch_ids is None:
            raise RunFolderError(f"{run_dir}: its arch list {previous['sample']['archs']} cannot be read to check it")
    return content_identity(previous, fingerprint, arch_ids), [{"at": None, **paths_of(previous)}]


def check_and_record(run_dir: Path, cfg: dict, identity: dict, previous: tuple[dict, list[dict]] | None,
                     expand_proxies) -> list[dict]:
    """Refuse a content change (naming it); return the path history with this invocation appended."""
    history: list[dict] = []
    if previous is not None:
        old, history = previous
        old = dict(old, proxies=expand_proxies(old["proxies"]))
        if old != identity:
            raise RunFolderError(f"{run_dir} holds a run made from different content (differs in: "
                                 f"{describe_difference(old, identity)}); set another 'output' or remove that folder")
    now = {"at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **paths_of(cfg)}
    if not history or ({k: v for k, v in history[-1].items() if k != "at"}
                       != {k: v for k, v in now.items() if k != "at"}):
        history = [*history, now]
    return history


def record_text(identity: dict, history: list[dict]) -> str:
    return json.dumps({"identity": identity, "paths": history}, indent=2) + "\n"


def config_text(cfg: dict, history: list[dict]) -> str:
    """The resolved config, with the paths of earlier invocations as comments when they differ."""
    lines = []
    current = paths_of(cfg)
    for entry in history[:-1]:
        moved = {k: v for k, v in entry.items() if k != "at" and v != current.get(k)}
        if moved:
            lines.append(f"# earlier invocation ({entry.get('at') or 'before identity.json'}) used: "
                         + ", ".join(f"{k}={v}" for k, v in moved.items()))
    return "".join(line + "\n" for line in lines) + config_mod.dump(cfg)
