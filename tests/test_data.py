"""Data batches from real images: .npz, CIFAR python archives, ImageNet16 pickles; and their errors."""

import pickle
import tarfile

import numpy as np
import pytest

from gradsign.pipeline.driver.data import DataError, dataset_info, load_batch, normalise, read_images
from conftest import small_npz


@pytest.fixture(scope="module")
def cifar_pixels(data_dir):
    with np.load(data_dir / "cifar10_train_1000.npz") as f:
        return f["images"][:60], f["labels"][:60].astype(np.int64)


def test_npz_batch_is_seeded_normalised_and_nchw(data_dir):
    a = load_batch(data_dir / "cifar10_train_1000.npz", "cifar10", 64, seed=0)
    b = load_batch(data_dir / "cifar10_train_1000.npz", "cifar10", 64, seed=0)
    c = load_batch(data_dir / "cifar10_train_1000.npz", "cifar10", 64, seed=1)
    assert a.images.shape == (64, 3, 32, 32) and a.images.dtype == np.float32
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert len(set(a.indices.tolist())) == 64
    raw, labels = read_images(data_dir / "cifar10_train_1000.npz", "cifar10")
    info = dataset_info("cifar10")
    i = int(a.indices[0])
    expected = (raw[i, 5, 7, 1] / 255.0 - info.mean[1]) / info.std[1]
    assert a.images[0, 1, 5, 7] == pytest.approx(expected, rel=1e-5)
    assert a.labels[0] == labels[i]


def test_every_shared_batch_reads(data_dir):
    for name, dataset, size in [("cifar100_train_468.npz", "cifar100", 32),
                                ("imagenet16_120_sample.npz", "imagenet16-120", 16)]:
        batch = load_batch(data_dir / name, dataset, 64, seed=0)
        assert batch.images.shape == (64, 3, size, size)
        assert batch.labels.max() < dataset_info(dataset).num_classes


def _cifar_rows(images):
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def test_cifar10_archive_folder_and_tarball(tmp_path, cifar_pixels):
    images, labels = cifar_pixels
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for k in range(1, 6):
        part = slice((k - 1) * 10, k * 10)
        (folder / f"data_batch_{k}").write_bytes(pickle.dumps(
            {"data": _cifar_rows(images[part]), "labels": labels[part].tolist()}))
    (folder / "test_batch").write_bytes(pickle.dumps(
        {"data": _cifar_rows(images[50:]), "labels": labels[50:].tolist()}))
    got, got_labels = read_images(folder, "cifar10", "train")
    assert np.array_equal(got, images[:50]) and np.array_equal(got_labels, labels[:50])
    tarball = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    got, got_labels = read_images(tarball, "cifar10", "test")
    assert np.array_equal(got, images[50:]) and np.array_equal(got_labels, labels[50:])


def test_cifar100_archive_uses_fine_labels(tmp_path, data_dir):
    with np.load(data_dir / "cifar100_train_468.npz") as f:
        images, labels = f["images"][:20], f["labels"][:20]
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rows = {"data": _cifar_rows(images), "fine_labels": labels.tolist(), "coarse_labels": [0] * 20}
    (folder / "train").write_bytes(pickle.dumps(rows))
    got, got_labels = read_images(folder, "cifar100", "train")
    assert np.array_equal(got, images) and np.array_equal(got_labels, labels)


def test_imagenet16_pickles_keep_first_120_classes(tmp_path, data_dir):
    with np.load(data_dir / "imagenet16_120_sample.npz") as f:
        images, labels = f["images"][:40], f["labels"][:40]
    raw_labels = labels + 1
    raw_labels[:5] = 500  # classes beyond 120 are dropped, as the benchmark does
    for k in range(1, 11):
        part = slice((k - 1) * 4, k * 4)
        (tmp_path / f"train_data_batch_{k}").write_bytes(pickle.dumps(
            {"data": _cifar_rows(images[part]), "labels": raw_labels[part].tolist()}))
    got, got_labels = read_images(tmp_path, "imagenet16-120", "train")
    assert np.array_equal(got, images[5:]) and np.array_equal(got_labels, labels[5:])


def test_errors_name_the_problem(tmp_path, data_dir, cifar_pixels):
    images, labels = cifar_pixels
    with pytest.raises(DataError, match="not found"):
        read_images(tmp_path / "nope.npz", "cifar10")
    with pytest.raises(DataError, match="needs 16x16"):
        read_images(small_npz(tmp_path / "big.npz", images, labels), "imagenet16-120")
    bad = labels.copy()
    bad[3] = 10
    with pytest.raises(DataError, match="labels out of range"):
        read_images(small_npz(tmp_path / "labels.npz", images, bad), "cifar10")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes((data_dir / "cifar10_train_1000.npz").read_bytes()[:5000])
    with pytest.raises(DataError, match="corrupt"):
        read_images(corrupt, "cifar10")
    with pytest.raises(DataError, match="batch_size"):
        load_batch(small_npz(tmp_path / "ok.npz", images, labels), "cifar10", 61, seed=0)
    with pytest.raises(DataError, match="unknown dataset"):
        dataset_info("mnist")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="has no file"):
        read_images(empty, "cifar10")


def test_normalise_imagenet_constants():
    info = dataset_info("ImageNet16-120")
    x = normalise(np.full((1, 16, 16, 3), 122, np.uint8), info)
    assert x.shape == (1, 3, 16, 16)
    assert x[0, 0, 0, 0] == pytest.approx((122 / 255 - 122.68 / 255) / (63.22 / 255), rel=1e-5)
