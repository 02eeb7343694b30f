"""Reading a finished (or partly finished) run folder back: the public ``gradsign.read_run``.

Read-only: nothing in the folder is changed. Scores are the committed ``scores/part-*.parquet`` files in
shard order (one row per scored arch: ``arch_id``, ``arch``, one float64 column per proxy, ``seconds``,
``error``); a folder still being written shows what was committed so far. A score file is taken only
when its bytes match the digest recorded at commit (``digests/``, where one was recorded) and its
``arch_id`` column equals its input shard's (``shards/``): anything else is a ``ScoreFileError`` naming the
file (``gradsign score`` on the same config sets such a file aside and scores it again).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from gradsign.pipeline.driver.shards import ScoreFileError, recorded_digest, digest_path


@dataclass(frozen=True)
class RunFolder:
    """One run folder. ``summary`` is None until the run (or ``gradsign report``) wrote one."""

    path: Path
    config: dict
    scores: pa.Table
    summary: dict | None
    topk: list[dict]

    @property
    def proxies(self) -> list[str]:
        return list(self.config.get("proxies") or [])

    def ranked(self, proxy: str | None = None) -> pa.Table:
        """The scored rows (no error) best first by ``proxy`` (default: the run's first proxy), ties by arch_id."""
        proxy = proxy or self.proxies[0]
        if proxy not in self.scores.column_names:
            raise ValueError(f"{self.path}: no scores for proxy {proxy!r}; the run has {self.proxies}")
        ok = self.scores.filter(pa.compute.is_null(self.scores.column("error")))
        ok = ok.filter(pa.compute.is_valid(ok.column(proxy)))
        return ok.sort_by([(proxy, "descending"), ("arch_id", "ascending")])


def _read_verified(run_dir: Path, path: Path) -> pa.Table:
    """One committed score file, checked against its recorded digest and its input shard's arch_ids."""
    index = int(path.stem.split("-")[1])
    data = path.read_bytes()
    recorded, problem = recorded_digest(digest_path(run_dir, index))
    if problem is None and recorded is not None and recorded != hashlib.sha256(data).hexdigest():
        problem = "its bytes do not match the sha256 recorded when it was committed"
    table = pq.read_table(pa.BufferReader(data)) if problem is None else None
    shard = run_dir / "shards" / path.name
    if table is not None and shard.is_file():
        if pq.read_table(shard, columns=["arch_id"]).column("arch_id").to_pylist() != \
                table.column("arch_id").to_pylist():
            problem = "its arch_id column is not its input shard's (scores of other archs)"
    if problem is not None:
        raise ScoreFileError(f"{path} failed verification: {problem}; rerun `gradsign score` on this folder's "
                             "config to score it again")
    return table


def read_run(run_dir: str | Path) -> RunFolder:
    """The run folder at ``run_dir``; FileNotFoundError when it has no ``config.yaml``, ScoreFileError
    when a committed score file fails verification."""
    import pyarrow.compute  # noqa: F401  (pa.compute, used by RunFolder.ranked)

    path = Path(run_dir)
    config_file = path / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no config.yaml)")
    config = yaml.safe_load(config_file.read_text()) or {}
    parts = sorted((path / "scores").glob("part-*.parquet"))
    scores = pa.concat_tables([_read_verified(path, p) for p in parts], promote_options="default") if parts else pa.table({})
    summary_file = path / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    topk_file = path / "topk.jsonl"
    topk = [json.loads(line) for line in topk_file.read_text().splitlines() if line.strip()] if topk_file.is_file() else []
    return RunFolder(path=path, config=config, scores=scores, summary=summary, topk=topk)
