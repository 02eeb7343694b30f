"""The layers every gradient proxy scores: each ``nn.Conv2d`` and ``nn.Linear`` (their weights, not biases)."""

from __future__ import annotations

from torch import nn

WEIGHTED = (nn.Conv2d, nn.Linear)


def weighted_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Conv2d/Linear of ``net``, in ``named_modules`` order (a module reached under two
    names is listed once, as ``named_modules`` lists it)."""
    return [(name, m) for name, m in net.named_modules() if isinstance(m, WEIGHTED)]
