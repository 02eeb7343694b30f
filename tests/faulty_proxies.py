"""Proxies that misbehave on purpose, for the fault tests (loaded with the config key ``plugins``).

Each looks at the first edge of the first NB201 cell and, by its op, raises, runs out of memory, kills
its process or reports non-finite gradients; otherwise it returns the parameter count, so values are
cheap and deterministic.
"""

import os

import torch

from actors.proxies import Score, register


def _first_op(net) -> str:
    return type(net.cells[0].edges[0]).__name__


def _params(net) -> float:
    return float(sum(p.numel() for p in net.parameters()))


@register("fails_on_pool_or_1x1")
def make_fails(**_):
    def proxy(net, inputs, targets):
        op = _first_op(net)
        if op == "AvgPool2d":
            raise RuntimeError("simulated broken op")
        if op == "ReLUConvBN" and net.cells[0].edges[0][1].kernel_size == (1, 1):
            raise torch.OutOfMemoryError("simulated out of memory")
        return _params(net)
    return proxy


@register("kills_on_skip")
def make_kills(**_):
    def proxy(net, inputs, targets):
        if _first_op(net) == "Identity":
            os._exit(1)  # the actor process dies, as on a segfault or an OOM kill
        return _params(net)
    return proxy


@register("nonfinite_on_zero")
def make_nonfinite(**_):
    def proxy(net, inputs, targets):
        return Score(_params(net), nonfinite=7 if _first_op(net) == "Zero" else 0)
    return proxy
