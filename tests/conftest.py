"""Shared fixtures: where the real reference data lives, one Ray cluster per test session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GRADSIGN_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "nb201_accuracy.csv").is_file():
        raise RuntimeError(f"reference data not found in {DATA}: set GRADSIGN_DATA to the shared data folder")
    return DATA


@pytest.fixture(scope="session")
def cifar10_batch(data_dir):
    """A real normalised CIFAR-10 batch of 16 (torch tensors)."""
    import torch

    from pipeline.data import load_batch

    batch = load_batch(data_dir / "cifar10_train_1000.npz", "cifar10", 16, seed=0)
    return torch.from_numpy(batch.images), torch.from_numpy(batch.labels)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every test that needs it (started once, ~7 s)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, logging_level="warning")
    yield ray
    ray.shutdown()


def small_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    np.savez(path, images=images, labels=labels)
    return path
