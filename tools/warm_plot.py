"""Test accuracy of the pick against the list's distance ``d``, for warm-started searches (issue 21):
``python -m tools.warm_plot``.

Reads the search folders ``results/search/warm-<ranking>-d<d>/`` (each a ``gradsign search`` warm-started
from its ``candidates.jsonl``; ``<ranking>`` the proxies of the list, ``d`` its ``--min-distance``, 0 = the
plain top-10), plus ``--plain`` folders for d = 0 lists kept elsewhere (``gradsign:results/search/gradsign-warm``),
and draws one panel per dataset: the mean test accuracy of the pick (500 runs) against ``d``, one line per
(ranking, variant), the cold rows of ``--cold`` and RoBoT's figures as horizontal lines.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

NAME = re.compile(r"^warm-(?P<ranking>.+)-d(?P<d>\d+)$")
TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet16-120": "ImageNet16-120"}


def collect(root: Path, plain: list[str], variants: list[str]) -> dict[tuple[str, str], dict[int, dict]]:
    """{(ranking, variant): {d: {dataset: mean test accuracy}}} over the warm folders under ``root``."""
    folders: list[tuple[str, int, Path]] = []
    for folder in sorted(root.iterdir()):
        match = NAME.match(folder.name)
        if match and (folder / "summary.json").is_file():
            folders.append((match["ranking"], int(match["d"]), folder))
    for item in plain:
        ranking, path = item.split(":", 1)
        folders.append((ranking, 0, Path(path)))
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for ranking, d, folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        for variant in variants:
            entry = summary["variants"].get(f"{variant} warm")
            if entry is not None:
                out.setdefault((ranking, variant), {})[d] = {k: v["mean"] for k, v in entry["test"].items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="results/search")
    # the plain GradSign top 10; the plain GradSign + params top 10 is the same ten cells
    parser.add_argument("--plain", nargs="*", default=["gradsign:results/search/gradsign-warm",
                                                        "gradsign-params:results/search/gradsign-warm"])
    parser.add_argument("--cold", default="results/search/gradsign", help="folder with the cold rows")
    parser.add_argument("--variants", nargs="+", default=["REA", "G-REA"])
    parser.add_argument("--output", default="results/search/warm-distance.png")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gradsign.search.published import ROBOT

    series = collect(Path(args.root), args.plain, args.variants)
    cold = json.loads((Path(args.cold) / "summary.json").read_text())["variants"]
    datasets = list(TITLES)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.2), dpi=110)
    for ax, dataset in zip(axes, datasets):
        rankings = sorted({r for r, _ in series})
        for (ranking, variant), points in sorted(series.items()):
            ds = sorted(points)
            ax.plot(ds, [points[d][dataset] for d in ds], marker="o", ms=3, color=f"C{rankings.index(ranking)}",
                    ls="-" if variant.startswith("G-") else ":", label=f"{variant} warm, list by {ranking}")
        for variant, color in (("REA", "grey"), ("G-REA", "black")):
            if variant in cold:
                ax.axhline(cold[variant]["test"][dataset]["mean"], color=color, ls="--", lw=1, label=f"{variant} cold")
        ax.axhline(ROBOT[dataset], color="red", ls="-.", lw=1, label="RoBoT (ICLR 2024)")
        ax.set_title(TITLES[dataset])
        ax.set_xlabel("d: min. distance between listed cells (edges whose op differs)")
        ax.set_ylabel("test accuracy of the pick (%), mean of 500 runs")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(args.output)
    plt.close(fig)
    print(f"{args.output}: {len(series)} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
