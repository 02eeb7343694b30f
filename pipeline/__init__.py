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
