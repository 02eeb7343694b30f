"""The driver side, the only package that talks to Ray and to disk. Its groups, each with one reason to
change:

- ``cli``: the ``gradsign`` command; routes each subcommand to its group (imports it lazily).
- ``common/``: what the driver and the search runner share: layered YAML configs, the run-folder lock,
  atomic file writes.
- ``driver/``: ``gradsign score``: config schema, data batches, shards, Ray dispatch, run identity and
  resume, progress, the space cache.
- ``outputs/``: what a run hands on: the reducer (correlations, top-k), summary/report/plots, ``gradsign
  report``/``compare``, results tables, and reading a run folder back.
- ``search_runner/``: ``gradsign search``: its config and the runner that spreads searches over Ray.
- ``official/``: official benchmark files (``gradsign truth nb201``).

Benchmarks, throughput sweeps, op counts, peer checks and the scripts that make ``results/`` live in the
top-level ``tools/`` folder, outside the installed package.

Importing this package loads neither torch nor Ray.
"""

from pathlib import Path as _Path

from gradsign.spaces import ground_truth as _ground_truth


def _read_official_nb201(path: _Path):
    """``ground_truth.path`` may name an official NAS-Bench-201 ``.pth`` (converted once, cached)."""
    from gradsign.pipeline.official.nb201 import read_pth_table

    return read_pth_table(path)


_ground_truth.register_reader(".pth", _read_official_nb201)
