"""The datasets the project knows: names (and aliases), class counts, image sizes, normalisation constants.

Shared by the driver (which reads and normalises batches, ``driver/data.py``) and the outputs (which name
datasets and their chance level); it reads no file and imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass


class DataError(ValueError):
    """A data file that is missing, unreadable or does not fit the dataset; the message says which."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2023, 0.1994, 0.2010)
DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 10, 32, _CIFAR_MEAN, _CIFAR_STD),
    "cifar100": DatasetInfo("cifar100", 100, 32, _CIFAR_MEAN, _CIFAR_STD),
    "imagenet16-120": DatasetInfo(
        "imagenet16-120", 120, 16,
        tuple(v / 255 for v in (122.68, 116.66, 104.01)), tuple(v / 255 for v in (63.22, 61.26, 65.09)),
    ),
}
_ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100", "imagenet16_120": "imagenet16-120",
            "imagenet16-120": "imagenet16-120", "imagenet16": "imagenet16-120"}


def dataset_info(name: str) -> DatasetInfo:
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[key]
