"""``python -m tools.proxy_cost --space nb201 --cells 10``: seconds per cell of each registered proxy.

Each proxy scores the same cells (a uniform sample, or rows of a table for DARTS/NB101) at batch 64 on one
CPU thread, each on a freshly built network at the cell's seeded weights, as the scorer does; the network
build is timed apart and not charged to any proxy. Prints the median and max per proxy, measured in one
run, so the ratios between proxies are the figures to read (the box is shared). ``--device cuda`` times on a
GPU (the device is synchronised around each proxy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.actors.scorer import arch_seed
from gradsign.pipeline.driver.data import load_batch

TABLES = {"darts": "nb301_naslib_725.jsonl", "nb101": "nb101_naslib_500.jsonl"}


def cells(space_name: str, count: int, data: Path) -> list[str]:
    space = spaces.get(space_name)
    if space_name in TABLES:
        rows = [json.loads(line) for line in open(data / TABLES[space_name])][:count]
        if space_name == "darts":
            return [space.from_record(r) for r in rows]
        return [space.canonical({"matrix": r["matrix"], "ops": r["ops"]}) if hasattr(space, "canonical") else r
                for r in rows]
    return [space.arch(int(i)) for i in space.sample_ids(count, 0)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="nb201")
    parser.add_argument("--cells", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--proxies", default="all", help="comma-separated, or all")
    parser.add_argument("--options", default="{}", help='JSON {proxy: {option: value}}')
    parser.add_argument("--device", default="cpu", help="cpu or cuda (timings synchronise the device)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = proxies.names() if args.proxies == "all" else args.proxies.split(",")
    options = json.loads(args.options)
    batch = load_batch(args.data / "cifar10_train_1000.npz", "cifar10", args.batch, seed=0)
    x, y = torch.from_numpy(batch.images).to(device), torch.from_numpy(batch.labels).to(device)
    space = spaces.get(args.space)
    archs = cells(args.space, args.cells, args.data)
    seconds: dict[str, list[float]] = {n: [] for n in ["(build)", *names]}
    errors: dict[str, str] = {}
    for arch in archs:
        for name in names:
            proxy = proxies.get(name, **options.get(name, {}))
            start = time.perf_counter()
            torch.manual_seed(arch_seed(0, arch))
            net = space.build(arch, 10).to(device)
            sync()
            built = time.perf_counter()
            try:
                proxy(net, x, y)
            except Exception as exc:  # noqa: BLE001 - one proxy's refusal is a row, not the end of the table
                errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            sync()
            seconds["(build)"].append(built - start)
            seconds[name].append(time.perf_counter() - built)
    print(f"{args.space}, {len(archs)} cells, batch {args.batch}, {args.device}, {args.threads} CPU thread(s): "
          "seconds per cell")
    print("| proxy | median | max |\n|---|---|---|")
    for name, values in seconds.items():
        if name in errors:
            print(f"| `{name}` | failed: {errors[name][:150]} | |")
        else:
            print(f"| `{name}` | {statistics.median(values):.3f} | {max(values):.3f} |")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
