"""The run folder: its layout, part names, score schema, digests bound to the run, the one writer of score
files and the one verified reader. Every module that touches ``scores/`` goes through here.

Layout (DESIGN.md "Runs")::

    RUN/config.yaml                          the resolved config
    RUN/identity.json                        the run's content identity (``pipeline/driver/identity.py``)
    RUN/shards/part-NNNNN.parquet            input rows: arch_id, arch (and the space's key column)
    RUN/scores/part-NNNNN.parquet            score rows (``score_schema``), one file per shard
    RUN/digests/part-NNNNN.parquet.sha256    ``HEX  part-NNNNN.parquet`` then ``run RUNID``
    RUN/rejected/part-NNNNN.parquet          score files that failed verification, set aside by ``score``

Invariants:
- a score file is written by ``commit`` alone: its bytes go to a temporary name, their sha256 and the run
  id are recorded in its digest, and only then is it renamed into place, so a digest never vouches for
  bytes it was not computed from and a file that exists is complete;
- a digest names the run it belongs to: ``run_id`` of the folder's content identity (``identity.json``).
  A file and its digest copied from a run of other content (other data, seed, sample, proxies...) are
  refused; runs of equal identity compute equal scores, so their files are interchangeable by design;
- a score file is trusted only through ``verify``: its bytes match its digest, the digest names this
  folder's run, it reads as Parquet, and its rows are its input shard's (same count, same ``arch_id`` and
  key column; same columns as the run's schema when the caller knows it). Every reader (``gradsign report``,
  ``candidates``, ``report --topk-distance``, the search runner, results tables, ``gradsign.read_run``)
  reads through ``read_verified`` / ``read_scores``, and a failure is one ``ScoreFileError`` naming the
  file, the same everywhere (the CLI prints its one line and exits 2); ``gradsign score`` instead sets the
  file aside (``set_aside``) and scores that shard again;
- older folders stay readable: a folder without any digest bound to its run (made before digests named
  their run, or before digests) is read as before, its files checked against their unbound digest where
  one exists and always against their shard, and ``legacy`` counts them; ``gradsign score`` with the
  folder's config records bound digests (``record_digest``). Once a folder holds a digest bound to its
  run, a file with a missing or unbound digest is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from gradsign.actors.rows import score_schema  # noqa: F401  (the score files' schema, owned with the folder)
from gradsign.pipeline.common.atomic import write_atomic_with_digest, write_text_atomic

CONFIG = "config.yaml"
IDENTITY = "identity.json"
SHARDS = "shards"
SCORES = "scores"
DIGESTS = "digests"
REJECTED = "rejected"


class ScoreFileError(ValueError):
    """A committed score file that fails verification: every reader refuses its folder with this message."""


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def part_index(path: Path) -> int:
    return int(Path(path).name.split(".")[0].split("-")[1])


def shard_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / SHARDS / part_name(index)


def score_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / SCORES / part_name(index)


def digest_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / DIGESTS / f"{part_name(index)}.sha256"


def committed(run_dir: Path) -> list[int]:
    """The shard indexes that have a committed score file, ascending."""
    return sorted(part_index(p) for p in (Path(run_dir) / SCORES).glob("part-*.parquet"))


def remove_temporaries(run_dir: Path) -> int:
    """Delete the temporary files a killed writer left in ``run_dir`` and its shards/, scores/, digests/."""
    removed = 0
    for sub in (".", SHARDS, SCORES, DIGESTS):
        for tmp in (Path(run_dir) / sub).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


# -- the run a digest belongs to ---------------------------------------------------------------------------

def run_id(identity: dict) -> str:
    """16 hex digits naming a content identity (``identity.json``'s ``identity``): equal content, equal id."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder_run_id(run_dir: Path) -> str | None:
    """The run id of the folder's ``identity.json``; None when it has none (a folder made before it)."""
    record = Path(run_dir) / IDENTITY
    if not record.is_file():
        return None
    try:
        return run_id(json.loads(record.read_text())["identity"])
    except (ValueError, KeyError, TypeError):
        raise ScoreFileError(f"{record} is not a readable identity record: its digests cannot be checked") from None


@dataclass(frozen=True)
class Digest:
    """A digest file read back: ``sha256`` of the bytes, ``run`` it names (None: the unbound older format),
    ``problem`` when the file is malformed; all None when there is no digest file."""

    sha256: str | None = None
    run: str | None = None
    problem: str | None = None


def read_digest(run_dir: Path, index: int) -> Digest:
    path = digest_path(run_dir, index)
    if not path.is_file():
        return Digest()
    lines = path.read_text(errors="replace").splitlines()
    head = lines[0].split() if lines else []
    if not head or len(head[0]) != 64 or any(c not in "0123456789abcdef" for c in head[0]):
        return Digest(problem=f"its digest file {path.name} is malformed")
    run = next((line.split()[1] for line in lines[1:] if line.startswith("run ") and len(line.split()) == 2), None)
    return Digest(head[0], run)


def digest_text(sha256: str, index: int, run: str) -> str:
    return f"{sha256}  {part_name(index)}\nrun {run}\n"


def record_digest(run_dir: Path, index: int, sha256: str, run: str) -> None:
    """Record (atomically) that the committed file of shard ``index`` has ``sha256`` and belongs to ``run``."""
    write_text_atomic(digest_path(run_dir, index), digest_text(sha256, index, run))


@dataclass(frozen=True)
class Trust:
    """What the score files of one folder must show: its ``run`` id (None without ``identity.json``) and
    whether the folder is ``bound`` (holds a digest naming its run: then every file needs one)."""

    run: str | None
    bound: bool

    @classmethod
    def of(cls, run_dir: Path) -> "Trust":
        run = folder_run_id(run_dir)
        bound = run is not None and any(
            read_digest(run_dir, part_index(p)).run == run
            for p in (Path(run_dir) / DIGESTS).glob("part-*.parquet.sha256"))
        return cls(run, bound)


# -- the writer ----------------------------------------------------------------------------------------------

def commit(run_dir: Path, index: int, table: pa.Table, run: str) -> str:
    """Write the score file of shard ``index`` (digest bound to ``run`` first, then the rename); its sha256."""
    return write_atomic_with_digest(table, score_path(run_dir, index), digest_path(run_dir, index),
                                    text=lambda sha: digest_text(sha, index, run))


def set_aside(run_dir: Path, index: int, problem: str) -> Path:
    """Move a score file that failed verification to ``rejected/`` (so no reader takes it), drop its
    digest, and say so on stderr; the caller scores the shard again."""
    run_dir = Path(run_dir)
    (run_dir / REJECTED).mkdir(exist_ok=True)
    target = run_dir / REJECTED / part_name(index)
    os.replace(score_path(run_dir, index), target)
    digest_path(run_dir, index).unlink(missing_ok=True)
    print(f"gradsign: warning: {score_path(run_dir, index)} failed verification: {problem}; moved to {target} "
          "and scored again", file=sys.stderr)
    return target


# -- the verified reader -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verified:
    """What ``verify`` found: ``table`` when the file is accepted (None when missing or refused);
    ``problem`` why it was refused; ``legacy`` when accepted without a digest bound to the run (``sha256``
    is the digest of the bytes read, for ``gradsign score`` to record)."""

    table: pa.Table | None
    problem: str | None = None
    legacy: bool = False
    sha256: str | None = None


def verify(run_dir: Path, index: int, trust: Trust, shard: pa.Table | None = None,
           schema: pa.Schema | None = None) -> Verified:
    """Check the committed score file of shard ``index``; ``Verified(None)`` when there is none.

    ``shard``: its input rows as the config makes them (default: ``shards/`` on disk, when present);
    ``schema``: the run's score schema (default: not checked beyond the shard's columns)."""
    path = score_path(run_dir, index)
    if not path.is_file():
        return Verified(None)
    if not os.access(path, os.R_OK):
        raise PermissionError(f"cannot read {path}: permission denied (run folder of another user?)")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    digest = read_digest(run_dir, index)
    problem = digest.problem
    if problem is None and digest.sha256 is not None and digest.sha256 != actual:
        problem = (f"its bytes do not match the sha256 recorded when it was committed "
                   f"({digest.sha256[:12]}... recorded, {actual[:12]}... now)")
    elif problem is None and digest.run is not None and digest.run != trust.run:
        problem = (f"its digest belongs to run {digest.run}, not to this folder's run {trust.run} "
                   "(a file copied from another run folder?)")
    elif problem is None and trust.bound and digest.sha256 is None:
        problem = f"it has no digest ({DIGESTS}/{part_name(index)}.sha256) while the folder's other files do"
    elif problem is None and trust.bound and digest.run is None:
        problem = f"its digest names no run while the folder's other digests name run {trust.run}"
    if problem is not None:
        return Verified(None, problem)
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        return Verified(None, f"it is not a readable Parquet file ({exc})")
    if shard is None and shard_path(run_dir, index).is_file():
        shard = pq.read_table(shard_path(run_dir, index))
    if schema is not None and table.column_names != schema.names:
        return Verified(None, f"its columns {table.column_names} are not the run's {schema.names}")
    if shard is not None:
        if table.num_rows != shard.num_rows:
            return Verified(None, f"it holds {table.num_rows} rows where its input shard has {shard.num_rows}")
        for column in [c for c in shard.column_names if c != "arch"]:  # arch_id and the key column (NB101 hash)
            if column not in table.column_names:
                return Verified(None, f"it has no {column} column (its input shard has one)")
            mine, theirs = table.column(column).to_pylist(), shard.column(column).to_pylist()
            if mine != theirs:
                k = next(i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b)
                return Verified(None, f"its {column} column is not its input shard's (row {k}: {mine[k]!r} where "
                                      f"the shard has {theirs[k]!r}): scores of other archs")
    return Verified(table, legacy=digest.run is None, sha256=actual)


def refusal(run_dir: Path, bad: list[tuple[int, str]]) -> ScoreFileError:
    """The one message every reader gives for files that failed verification (one line, the first named)."""
    index, problem = bad[0]
    more = f" ({len(bad) - 1} more score file(s) of this folder failed too)" if len(bad) > 1 else ""
    return ScoreFileError(f"{score_path(run_dir, index)} failed verification: {problem}{more}; rerun `gradsign "
                          "score` with this folder's config to set it aside and score it again")


class Reader:
    """Reads one folder's committed score files through ``verify``: ``parts`` yields them, refusing the folder
    (``ScoreFileError``, ``refusal``) after the last one when any failed; ``legacy`` counts the files taken
    without a digest bound to the run."""

    def __init__(self, run_dir: str | Path, schema: pa.Schema | None = None):
        self.run_dir = Path(run_dir)
        self.schema = schema
        self.trust = Trust.of(self.run_dir)
        self.legacy = 0

    def parts(self, shards: Iterable[tuple[int, pa.Table]] | None = None) -> Iterator[tuple[int, pa.Table | None]]:
        """(index, verified table or None when not committed) for each ``(index, shard)`` of ``shards``
        (default: every committed file, checked against ``shards/`` on disk)."""
        if shards is None:
            shards = ((index, None) for index in committed(self.run_dir))
        bad: list[tuple[int, str]] = []
        for index, shard in shards:
            found = verify(self.run_dir, index, self.trust, shard, self.schema)
            if found.problem is not None:
                bad.append((index, found.problem))
                continue
            self.legacy += found.table is not None and found.legacy
            yield index, found.table
        if bad:
            raise refusal(self.run_dir, bad)

    def note(self) -> str | None:
        """One line for stderr when files were taken without a digest bound to the run, else None."""
        if not self.legacy:
            return None
        return (f"gradsign: note: {self.legacy} score file(s) of {self.run_dir} carry no digest naming their run "
                "(a folder written before digests did); `gradsign score` with its config records them")


def read_scores(run_dir: str | Path, quiet: bool = False) -> pa.Table:
    """Every committed score file of ``run_dir``, verified, in shard order (an empty table when none);
    ``ScoreFileError`` when one fails. Prints ``Reader.note`` to stderr unless ``quiet``."""
    reader = Reader(run_dir)
    tables = [table for _, table in reader.parts()]
    if not quiet and reader.note():
        print(reader.note(), file=sys.stderr)
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


# -- the Python API's view of a folder (``gradsign.read_run``) -------------------------------------------------

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
        import pyarrow.compute as pc

        proxy = proxy or self.proxies[0]
        if proxy not in self.scores.column_names:
            raise ValueError(f"{self.path}: no scores for proxy {proxy!r}; the run has {self.proxies}")
        ok = self.scores.filter(pc.is_null(self.scores.column("error")))
        ok = ok.filter(pc.is_valid(ok.column(proxy)))
        return ok.sort_by([(proxy, "descending"), ("arch_id", "ascending")])


def read_run(run_dir: str | Path) -> RunFolder:
    """The run folder at ``run_dir``, read-only: its config, verified scores (``read_scores``), summary and
    top-k. FileNotFoundError when it has no ``config.yaml``; ScoreFileError when a score file fails."""
    import yaml

    path = Path(run_dir)
    config_file = path / CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no {CONFIG})")
    config = yaml.safe_load(config_file.read_text()) or {}
    scores = read_scores(path, quiet=True)
    summary_file = path / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    topk_file = path / "topk.jsonl"
    topk = ([json.loads(line) for line in topk_file.read_text().splitlines() if line.strip()]
            if topk_file.is_file() else [])
    return RunFolder(path=path, config=config, scores=scores, summary=summary, topk=topk)
