"""Data batches: read real image files, check them, choose a seeded batch, normalise it.

Readers (by what ``data.path`` points at):
- ``*.npz`` with ``images`` uint8 (N, H, W, 3) and ``labels`` (N,) integers;
- CIFAR-10/100 python archives: ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` or their
  extracted folders (``cifar-10-batches-py``, ``cifar-100-python``); ``data.split`` picks train or test;
- ImageNet16 pickles (the folder with ``train_data_batch_1..10`` and ``val_data``, labels 1..1000):
  ImageNet16-120 keeps labels 1..120 and shifts them to 0..119, as the benchmark does.

Invariant: a batch depends only on (file contents, split, batch_size, seed).
"""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradsign.pipeline.common.datasets import DATASETS, DataError, DatasetInfo, dataset_info  # noqa: F401


@dataclass(frozen=True)
class DataBatch:
    """A normalised batch: ``images`` float32 (N, 3, H, W), ``labels`` int64 (N,)."""

    dataset: str
    images: np.ndarray
    labels: np.ndarray
    source: str
    indices: np.ndarray

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.images.tobytes())
        digest.update(self.labels.tobytes())
        return digest.hexdigest()[:16]


def _unpickle(data: bytes, what: str) -> dict:
    try:
        obj = pickle.loads(data, encoding="latin1")
    except Exception as exc:  # corrupt pickles raise many kinds of error
        raise DataError(f"corrupt data file {what}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"corrupt data file {what}: expected a dict, got {type(obj).__name__}")
    return obj


def _rows_to_images(flat: np.ndarray, size: int, what: str) -> np.ndarray:
    flat = np.asarray(flat, dtype=np.uint8)
    if flat.ndim != 2 or flat.shape[1] != 3 * size * size:
        raise DataError(f"{what}: rows of {flat.shape[1:]} values do not hold 3x{size}x{size} images")
    return flat.reshape(-1, 3, size, size).transpose(0, 2, 3, 1)


def _cifar_member_names(dataset: str, split: str) -> list[str]:
    if dataset == "cifar10":
        return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return ["train"] if split == "train" else ["test"]


def _read_cifar(path: Path, info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    label_key = "labels" if info.name == "cifar10" else "fine_labels"
    members = _cifar_member_names(info.name, split)
    blobs: list[tuple[str, bytes]] = []
    if path.is_dir():
        for name in members:
            candidates = [path / name, *path.glob(f"*/{name}")]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise DataError(f"{info.name} archive folder {path} has no file {name!r}")
            blobs.append((str(found), found.read_bytes()))
    else:
        try:
            with tarfile.open(path) as tar:
                by_base = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                for name in members:
                    if name not in by_base:
                        raise DataError(f"{info.name} archive {path} has no member {name!r}")
                    blobs.append((f"{path}:{name}", tar.extractfile(by_base[name]).read()))
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"corrupt archive {path}: {exc}") from exc
    images, labels = [], []
    for what, blob in blobs:
        obj = _unpickle(blob, what)
        if "data" not in obj or label_key not in obj:
            raise DataError(f"{what} has no 'data'/{label_key!r} entries (is it a {info.name} archive?)")
        images.append(_rows_to_images(obj["data"], info.image_size, what))
        labels.append(np.asarray(obj[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _read_imagenet16(path: Path, info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = [f"train_data_batch_{i}" for i in range(1, 11)] if split == "train" else ["val_data"]
    images, labels = [], []
    for name in names:
        file = path / name
        if not file.is_file():
            raise DataError(f"ImageNet16 folder {path} has no file {name!r}")
        obj = _unpickle(file.read_bytes(), str(file))
        if "data" not in obj or "labels" not in obj:
            raise DataError(f"{file} has no 'data'/'labels' entries (is it an ImageNet16 pickle?)")
        raw = np.asarray(obj["labels"], dtype=np.int64)
        keep = (raw >= 1) & (raw <= info.num_classes)  # ImageNet16-120: the first 120 classes
        images.append(_rows_to_images(obj["data"], info.image_size, str(file))[keep])
        labels.append(raw[keep] - 1)
    return np.concatenate(images), np.concatenate(labels)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "images" not in npz.files or "labels" not in npz.files:
                raise DataError(f"{path} must hold 'images' and 'labels' arrays; it holds {npz.files}")
            return npz["images"], npz["labels"]
    except DataError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, EOFError ...
        raise DataError(f"corrupt data file {path}: {exc}") from exc


def read_images(path: str | Path, dataset: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """All images (uint8 N,H,W,3) and labels (int64, 0-based) of ``split`` at ``path``, checked."""
    info = dataset_info(dataset)
    path = Path(path)
    if split not in ("train", "test"):
        raise DataError(f"data.split must be 'train' or 'test', got {split!r}")
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.suffix == ".npz":
        images, labels = _read_npz(path)
    elif info.name.startswith("cifar"):
        images, labels = _read_cifar(path, info, split)
    elif path.is_dir():
        images, labels = _read_imagenet16(path, info, split)
    else:
        raise DataError(f"cannot read {path}: expected a .npz file or the {info.name} archive folder")
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[3] != 3:
        raise DataError(f"{path}: images must be (N, H, W, 3), got {images.shape}")
    if images.shape[1:3] != (info.image_size, info.image_size):
        raise DataError(
            f"{path}: images are {images.shape[1]}x{images.shape[2]} but {info.name} needs "
            f"{info.image_size}x{info.image_size}"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8 pixels, got {images.dtype}")
    if labels.shape != (images.shape[0],):
        raise DataError(f"{path}: {labels.shape[0] if labels.ndim else 0} labels for {images.shape[0]} images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise DataError(
            f"{path}: labels out of range for {info.name}: found {labels.min()}..{labels.max()}, "
            f"need 0..{info.num_classes - 1}"
        )
    return images, labels.astype(np.int64)


def normalise(images: np.ndarray, info: DatasetInfo) -> np.ndarray:
    """uint8 (N,H,W,3) -> float32 (N,3,H,W) with the dataset's mean and std."""
    x = images.astype(np.float32) / 255.0
    x = (x - np.asarray(info.mean, np.float32)) / np.asarray(info.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def load_batch(path: str | Path, dataset: str, batch_size: int, seed: int, split: str = "train") -> DataBatch:
    """``batch_size`` distinct images drawn with ``seed`` from ``split`` of the file at ``path``."""
    info = dataset_info(dataset)
    images, labels = read_images(path, info.name, split)
    if not 1 <= batch_size <= images.shape[0]:
        raise DataError(f"data.batch_size must be in [1, {images.shape[0]}] for {path}, got {batch_size}")
    indices = np.random.default_rng(seed).choice(images.shape[0], size=batch_size, replace=False)
    return DataBatch(
        dataset=info.name,
        images=normalise(images[indices], info),
        labels=labels[indices],
        source=str(path),
        indices=indices,
    )

