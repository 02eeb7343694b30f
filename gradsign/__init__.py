"""gradsign: score whole NAS search spaces with GradSign (ICLR 2022) on Ray, and hand ranked candidate
lists to the search that follows.

The project imports under this one name: ``gradsign.spaces`` (what an architecture is), ``gradsign.actors``
(proxies and the scoring engines), ``gradsign.pipeline`` (the Ray driver, its outputs and the search
runner) and ``gradsign.search`` (pure NAS algorithms). The small public API below is enough to score one
network, walk a space and read a finished run::

    import torch
    import gradsign

    space = gradsign.load_space("nb201")
    torch.manual_seed(0)
    net = space.build(space.arch(15624), num_classes=10)
    value = gradsign.score(net, inputs, targets)          # GradSign of this network on this batch
    run = gradsign.read_run("runs/nb201-cifar10-smoke")    # config, scores (Arrow), summary, top-k

Importing ``gradsign`` is cheap: torch, Ray and pyarrow load only when a function that needs them runs.
"""

from __future__ import annotations

from pathlib import Path as _Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The subpackages gradsign.{pipeline,actors,spaces,search} are the folders at the top of the repository,
# reached through relative symlinks in this folder (gradsign/pipeline -> ../pipeline, ...): a plain import
# path that static tools (pyright, mypy, jedi) follow in a checkout and in an editable install, and that a
# wheel holds as real folders. docs/architecture.md says why.

if TYPE_CHECKING:
    import torch
    from torch import nn

    from gradsign.pipeline.common.run_folder import RunFolder


def score(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, proxy: str = "gradsign",
          **options: Any) -> float:
    """``proxy``'s score of ``net`` on one batch (GradSign by default; higher is better).

    ``net`` is any classifier ``nn.Module`` at initialisation; it may be changed (pass a fresh one).
    ``inputs`` is an (N, C, H, W) float tensor on the net's device, ``targets`` (N,) class indices.
    ``options`` go to the proxy (e.g. ``engine="loop"`` for GradSign's reference loop). The value is a
    float; a ``Score`` (a float that also says how many gradient entries were non-finite) for GradSign.
    """
    from gradsign.actors import proxies

    return proxies.get(proxy, **options)(net, inputs, targets)


def proxy_names() -> list[str]:
    """The registered proxies (``gradsign``, ``naswot``, ``synflow``, ...)."""
    from gradsign.actors import proxies

    return proxies.names()


def load_space(name: str):
    """The search space registered as ``name`` (``nb201``, ``nb101``, or ``package.module:Name``):
    ``len(space)``, iteration over arch strings in canonical order, ``space.arch(arch_id)``,
    ``space.arch_id(arch)``, ``space.key(arch)``, ``space.build(arch, num_classes) -> nn.Module``."""
    from gradsign import spaces

    return spaces.get(name)


def read_run(run_dir: str | _Path) -> RunFolder:
    """A run folder written by ``gradsign score``: its config, committed scores, summary and top-k."""
    from gradsign.pipeline.common.run_folder import read_run as _read_run

    return _read_run(run_dir)


__all__ = ["__version__", "load_space", "proxy_names", "read_run", "score"]
