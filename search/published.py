"""Published figures the search report sets its results beside (NB201 CIFAR-10 search, 12,000 s budget,
12-epoch signal, 500 runs; mean and std of the pick's 200-epoch test accuracy, %)."""

from __future__ import annotations

PUBLISHED_BUDGET = 12000  # simulated seconds

# NB201 paper (Dong & Yang, ICLR 2020), Table: C10 / C100 / ImageNet16-120.
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "REA": {"cifar10": (93.92, 0.30), "cifar100": (71.84, 0.99), "imagenet16-120": (45.15, 0.89)},
    "RS": {"cifar10": (93.70, 0.36), "cifar100": (71.04, 1.07), "imagenet16-120": (44.57, 1.25)},
    "REINFORCE": {"cifar10": (93.85, 0.37), "cifar100": (71.71, 1.09), "imagenet16-120": (45.24, 1.18)},
    "BOHB": {"cifar10": (93.61, 0.52), "cifar100": (70.85, 1.28), "imagenet16-120": (44.42, 1.49)},
}
OPTIMUM: dict[str, float] = {"cifar10": 94.37, "cifar100": 73.51, "imagenet16-120": 47.31}
# GradSign paper: G-variants improve the best-found accuracy by up to these points.
GRADSIGN_GAIN: dict[str, float] = {"cifar10": 0.3, "cifar100": 1.1, "imagenet16-120": 1.0}
# RoBoT (ICLR 2024), 20 queries, proxies precomputed for every arch.
ROBOT: dict[str, float] = {"cifar10": 94.36, "cifar100": 73.51, "imagenet16-120": 46.34}
