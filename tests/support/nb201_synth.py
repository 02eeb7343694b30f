"""Files in the official NAS-Bench-201 ``.pth`` format, built with the ``nas_201_api`` package's own classes.

For tests (a handful of cells with known numbers) and for measuring the converter (``gradsign.pipeline.official.nb201``)
on a file of the official format and of realistic size per cell. The numbers are made up; the layout is the
one ``NASBench201API.__init__`` reads:

    torch.save({"meta_archs": [arch string, ...],            # position = official index
                "arch2infos": {index: {"less": ArchResults.state_dict(),   # hp = 12 epochs
                                       "full": ArchResults.state_dict()}}, # hp = 200 epochs
                "evaluated_indexes": [index, ...]}, path)

An ``ArchResults`` holds one ``ResultsCount`` per (dataset split, seed); a ``ResultsCount`` holds per-epoch
dicts: train accuracy/top-5/loss/time keyed by epoch, and per evaluation set (``x-valid``, ``x-test``,
``ori-test``) accuracy/loss/time keyed ``"<set>@<epoch>"`` (written through ``update_eval``, so the three
dicts share their key strings, as in files the package writes). Weights are not stored
(``net_state_dict`` is None), as in the official v1_0/v1_1 files.

Layout of v1_1 (``NAS-Bench-201-v1_1-096897.pth``, from the package's history notes): 200 epochs on all
four dataset splits, 2,225 cells trained once, 5,439 twice, 7,961 three times; 12 epochs once on
``cifar10``, ``cifar100``, ``ImageNet16-120`` and twice on ``cifar10-valid``. v1_0 (``...-e61699.pth``):
its 12-epoch results exist for ``cifar10-valid`` only. ``synthetic_cells`` draws cells with that
trial mix and the evaluation sets each split has (``cifar10-valid``: x-valid, ori-test; ``cifar10``:
ori-test; ``cifar100`` and ``ImageNet16-120``: ori-test, x-valid, x-test).

``python -m support.nb201_synth OUT.pth --cells N`` writes a synthetic file (for the memory/time
measurement in docs/official-files.md).
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

EVAL_SETS: dict[str, tuple[str, ...]] = {
    "cifar10-valid": ("x-valid", "ori-test"),
    "cifar10": ("ori-test",),
    "cifar100": ("ori-test", "x-valid", "x-test"),
    "ImageNet16-120": ("ori-test", "x-valid", "x-test"),
}
CLASSES = {"cifar10-valid": 10, "cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}
SEEDS = (777, 888, 999)

# value(index, hp, dataset, seed, what, epoch) -> float; ``what`` is "train", "train5", "train_loss",
# "train_time", "<set>" (accuracy), "<set>_loss", "<set>_time", "params", "flops", "latency".
ValueFn = Callable[[int, int, str, int, str, int], float]


@dataclass
class CellSpec:
    """One cell of a file: its official index, arch string, and the seeds trained per (hp, dataset)."""

    index: int
    arch: str
    trials: dict[int, dict[str, tuple[int, ...]]] = field(default_factory=dict)  # hp -> dataset -> seeds


def _results_count(index: int, arch: str, hp: int, dataset: str, seed: int, value: ValueFn):
    from nas_201_api import ResultsCount

    epochs = range(hp)
    rc = ResultsCount(
        dataset, None,
        {e: value(index, hp, dataset, seed, "train", e) for e in epochs},
        {e: value(index, hp, dataset, seed, "train_loss", e) for e in epochs},
        value(index, hp, dataset, seed, "params", 0), value(index, hp, dataset, seed, "flops", 0),
        {"channel": 16, "num_cells": 5, "arch_str": arch, "class_num": CLASSES[dataset]},
        seed, hp, [value(index, hp, dataset, seed, "latency", 0)],
    )
    rc.update_train_info(
        {e: value(index, hp, dataset, seed, "train", e) for e in epochs},
        {e: value(index, hp, dataset, seed, "train5", e) for e in epochs},
        {e: value(index, hp, dataset, seed, "train_loss", e) for e in epochs},
        {e: value(index, hp, dataset, seed, "train_time", e) for e in epochs},
    )
    accs, losses, times = {}, {}, {}
    for name in EVAL_SETS[dataset]:
        for e in epochs:
            key = f"{name}@{e}"
            accs[key] = value(index, hp, dataset, seed, name, e)
            losses[key] = value(index, hp, dataset, seed, f"{name}_loss", e)
            times[key] = value(index, hp, dataset, seed, f"{name}_time", e)
    rc.update_eval(accs, losses, times)
    return rc


def arch_results(cell: CellSpec, hp: int, value: ValueFn) -> dict:
    """The ``state_dict()`` of the cell's ``ArchResults`` at ``hp`` epochs (what the file stores)."""
    from nas_201_api import ArchResults

    results = ArchResults(cell.index, cell.arch)
    for dataset, seeds in cell.trials.get(hp, {}).items():
        for seed in seeds:
            results.update(dataset, seed, _results_count(cell.index, cell.arch, hp, dataset, seed, value))
    return results.state_dict()


def benchmark_dict(cells: list[CellSpec], value: ValueFn, size: int | None = None) -> dict:
    """The object an official file holds; ``meta_archs`` has ``size`` entries (default: the cells')."""
    size = max(c.index for c in cells) + 1 if size is None else size
    by_index = {c.index: c.arch for c in cells}
    from gradsign.spaces.nb201 import Cell

    used = set(by_index.values())
    spare = (a for a in (str(Cell.from_id(i)) for i in range(15625)) if a not in used)
    meta = [by_index[i] if i in by_index else next(spare) for i in range(size)]
    return {
        "meta_archs": meta,
        "arch2infos": {c.index: {"less": arch_results(c, 12, value), "full": arch_results(c, 200, value)}
                       for c in cells},
        "evaluated_indexes": sorted(c.index for c in cells),
    }


def save(obj: dict, path: str | Path, legacy: bool = True) -> None:
    """``torch.save``; ``legacy=True`` writes the pre-1.6 stream format the 2020 files were saved in."""
    import torch

    torch.save(obj, str(path), _use_new_zipfile_serialization=not legacy)


def synthetic_cells(count: int, seed: int = 0, layout: str = "v1_1") -> list[CellSpec]:
    """``count`` cells with the v1_1 (or v1_0) trial mix; official indexes 0..count-1, random arch strings."""
    from gradsign.spaces.nb201 import SIZE, Cell

    rng = random.Random(seed)
    ids = rng.sample(range(SIZE), count)
    cells = []
    for index, arch_id in enumerate(ids):
        k = rng.choices((1, 2, 3), weights=(2225, 5439, 7961) if layout == "v1_1" else (6219, 1621, 7785))[0]
        full = {d: SEEDS[:k] for d in EVAL_SETS}
        less = ({"cifar10-valid": SEEDS[:2], "cifar10": SEEDS[:1], "cifar100": SEEDS[:1],
                 "ImageNet16-120": SEEDS[:1]} if layout == "v1_1" else {"cifar10-valid": SEEDS[:2]})
        cells.append(CellSpec(index, str(Cell.from_id(arch_id)), {200: full, 12: less}))
    return cells


def random_value(index: int, hp: int, dataset: str, seed: int, what: str, epoch: int) -> float:
    """Made-up but distinct floats (every entry its own float object, as in real training logs)."""
    return random.random() * 100.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m support.nb201_synth",
                                     description="Write a synthetic file in the official NAS-Bench-201 format.")
    parser.add_argument("out")
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--layout", choices=("v1_0", "v1_1"), default="v1_1")
    parser.add_argument("--zip", action="store_true", help="torch>=1.6 zip format instead of the legacy stream")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    random.seed(args.seed)
    cells = synthetic_cells(args.cells, args.seed, args.layout)
    save(benchmark_dict(cells, random_value), args.out, legacy=not args.zip)
    print(f"wrote {args.out}: {args.cells} cells ({args.layout} layout), "
          f"{Path(args.out).stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
