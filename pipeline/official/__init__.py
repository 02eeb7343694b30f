"""Official benchmark files turned into the project's tables (``gradsign truth nb201``, ``gradsign truth nds``).

``register_readers()`` lets ground-truth loading (``spaces.ground_truth.read_table``) read an official
NAS-Bench-201 ``.pth`` directly (converted once, cached); the CLI and the run's ground-truth loader call it.
"""

from __future__ import annotations

from pathlib import Path


def _read_official_nb201(path: Path):
    from gradsign.pipeline.official.nb201 import read_pth_table

    return read_pth_table(path)


def register_readers() -> None:
    """Register the official-file readers with ``spaces.ground_truth`` (idempotent; loads no torch)."""
    from gradsign.spaces import ground_truth

    ground_truth.register_reader(".pth", _read_official_nb201)
