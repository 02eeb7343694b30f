"""Count the aten operations a piece of work dispatches, and how many of them do device work.

On a GPU the hooks engine is launch-bound (one kernel per operation, each far shorter than its launch),
so the number of operations that do device work is what its GPU time follows. That number depends only
on the network, the engine and the code path (``conv_method``), not on the device's speed, so it can be
measured and compared on the CPU (``python -m tools.bench gradsign --count-ops``) and then checked on a
GPU. Views, allocations without a fill and metadata queries do no device work and are counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

T = TypeVar("T")

# Not views, yet no device work: allocations (no fill), metadata, reshapes that alias their input.
_NO_DEVICE_WORK = frozenset({
    "empty", "empty_strided", "new_empty", "new_empty_strided", "promote_types", "result_type", "_unsafe_view",
    "as_strided_", "is_same_size", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset",
})


@dataclass
class OpCount:
    total: int = 0  # every aten operation dispatched
    device: int = 0  # those that do device work (a kernel or a copy on a GPU), on the device asked for


class _Counter(TorchDispatchMode):
    def __init__(self, count: OpCount, device_type: str | None):
        super().__init__()
        self.count = count
        self.device_type = device_type

    def _on_device(self, *trees) -> bool:
        return self.device_type is None or any(
            isinstance(leaf, torch.Tensor) and leaf.device.type == self.device_type
            for leaf in tree_leaves(trees))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.count.total += 1
        out = func(*args, **kwargs)
        if (not func.is_view and func.overloadpacket.__name__ not in _NO_DEVICE_WORK
                and self._on_device(args, kwargs, out)):
            self.count.device += 1
        return out


def count_ops(fn: Callable[[], T], device: torch.device | str | None = None) -> tuple[T, OpCount]:
    """Run ``fn()`` and return its result with the operations it dispatched (autograd's backward included).

    ``device``: count as device work only operations with a tensor (input or output) on that device type
    (e.g. ``cuda``: work done on the CPU meanwhile, such as a host-side probe, is left out); None = all."""
    count = OpCount()
    with _Counter(count, None if device is None else torch.device(device).type):
        result = fn()
    return result, count
