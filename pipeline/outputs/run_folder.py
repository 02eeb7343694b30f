"""Reading a finished (or partly finished) run folder back: the public ``gradsign.read_run``.

Read-only: nothing in the folder is changed. Scores are the committed ``scores/part-*.parquet`` files in
shard order (one row per scored arch: ``arch_id``, ``arch``, one float64 column per proxy, ``seconds``,
``error``); a folder still being written shows what was committed so far.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml


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


def read_run(run_dir: str | Path) -> RunFolder:
    """The run folder at ``run_dir``; FileNotFoundError when it has no ``config.yaml``."""
    import pyarrow.compute  # noqa: F401  (pa.compute, used by RunFolder.ranked)

    path = Path(run_dir)
    config_file = path / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no config.yaml)")
    config = yaml.safe_load(config_file.read_text()) or {}
    parts = sorted((path / "scores").glob("part-*.parquet"))
    scores = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default") if parts else pa.table({})
    summary_file = path / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    topk_file = path / "topk.jsonl"
    topk = [json.loads(line) for line in topk_file.read_text().splitlines() if line.strip()] if topk_file.is_file() else []
    return RunFolder(path=path, config=config, scores=scores, summary=summary, topk=topk)
