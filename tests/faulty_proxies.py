"""Proxies that misbehave on purpose, for the fault tests (loaded with the config key ``plugins``).

Each looks at the first edge of the first NB201 cell and, by its op, raises, runs out of memory, kills
its process or reports non-finite gradients; otherwise it returns the parameter count, so values are
cheap and deterministic.
"""

import os

import torch

from gradsign.actors.proxies import Score, register


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


@register("flaky_while_marker")
def make_flaky(marker: str = ""):
    """Fails (a transient error) on every arch while the file ``marker`` exists."""
    def proxy(net, inputs, targets):
        if marker and os.path.exists(marker):
            raise RuntimeError("simulated transient failure")
        return _params(net)
    return proxy


@register("oom_above_budget")
def make_oom(memory_budget_mb: int = 2048, limit_mb: int = 512):
    """Runs out of memory unless its memory budget is at most ``limit_mb`` (like a chunked engine)."""
    def proxy(net, inputs, targets):
        if memory_budget_mb > limit_mb:
            raise torch.OutOfMemoryError(f"simulated out of memory at a {memory_budget_mb} MB budget")
        return _params(net)
    return proxy


class SimulatedCrash(BaseException):
    """Escapes the scorer's per-arch ``except Exception``: the call itself fails (a RayTaskError)."""


@register("escapes_on_pool")
def make_escapes(**_):
    def proxy(net, inputs, targets):
        if _first_op(net) == "AvgPool2d":
            raise SimulatedCrash("simulated scorer bug")
        return _params(net)
    return proxy


@register("hangs_on_pool")
def make_hangs(**_):
    def proxy(net, inputs, targets):
        if _first_op(net) == "AvgPool2d":
            import time
            time.sleep(3600)
        return _params(net)
    return proxy


@register("sleeps")
def make_sleeps(seconds: float = 2.0):
    def proxy(net, inputs, targets):
        import time
        time.sleep(seconds)
        return _params(net)
    return proxy


_CALLS = {"fills_disk": 0}


@register("fills_disk")
def make_fills_disk(path: str = "", at_call: int = 1):
    """On its ``at_call``-th call in this process, fills the filesystem holding ``path`` (a real file
    written until the OS says ENOSPC): the next write there fails as on a full disk."""
    def proxy(net, inputs, targets):
        _CALLS["fills_disk"] += 1
        if path and _CALLS["fills_disk"] == at_call:
            import errno

            with open(path, "ab") as out:
                try:
                    while True:
                        out.write(b"\0" * 65536)
                        out.flush()
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
        return _params(net)
    return proxy
