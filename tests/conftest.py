"""Shared fixtures: where the real reference data lives, one Ray cluster per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GRADSIGN_DATA", REPO.parent / "shared" / "data")).resolve()
TESTS = Path(__file__).resolve().parent
if str(REPO) not in sys.path:  # tools/ (research scripts, not installed) is imported from the checkout
    sys.path.insert(0, str(REPO))

# Ray workers (and subprocess drivers) must import the test plugin ``faulty_proxies``: they inherit this.
os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "nb201_accuracy.csv").is_file():
        raise RuntimeError(f"reference data not found in {DATA}: set GRADSIGN_DATA to the shared data folder")
    return DATA


@pytest.fixture(scope="session")
def cifar10_batch(data_dir):
    """A real normalised CIFAR-10 batch of 16 (torch tensors)."""
    import torch

    from gradsign.pipeline.driver.data import load_batch

    batch = load_batch(data_dir / "cifar10_train_1000.npz", "cifar10", 16, seed=0)
    return torch.from_numpy(batch.images), torch.from_numpy(batch.labels)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every test that needs it (started once, ~7 s)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
             logging_level="warning")
    yield ray
    ray.shutdown()


def small_config(tmp_path: Path, data_dir: Path, *extra: str, **over) -> dict:
    """A small real run: 12 NB201 cells, batch 8, shards of 4, into ``tmp_path / 'run'``."""
    from gradsign.pipeline.driver.config import resolve

    return resolve("configs/nb201-cifar10.yaml", small_overrides(tmp_path, data_dir, *extra, **over))


def small_overrides(tmp_path: Path, data_dir: Path, *extra: str, **over) -> list[str]:
    sets = [f"data.path={data_dir}/cifar10_train_1000.npz", "data.batch_size=8", "sample.size=12",
            "sample.seed=5", f"ground_truth.path={data_dir}/nb201_accuracy.csv",
            "ground_truth.column=cifar10_test", "shard_size=4", "topk=5", "progress=false",
            "ray.object_store_mb=128", f"output={tmp_path / 'run'}", *extra]
    return sets + [f"{k.replace('__', '.')}={v}" for k, v in over.items()]


def small_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    np.savez(path, images=images, labels=labels)
    return path
