"""Count the aten operations a piece of work dispatches, and how many of them do device work.

On a GPU the hooks engine is launch-bound (one kernel per operation, each far shorter than its launch),
so the number of operations that do device work is what its GPU time follows. That number depends only
on the network, the engine and the code path (``conv_method``), not on the device's speed, so it can be
measured and compared on the CPU (``python -m pipeline.bench gradsign --count-ops``) and then checked on a
GPU. Views, allocations without a fill and metadata queries do no device work and are counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode

T = TypeVar("T")

# Not views, yet no device work: allocations (no fill), metadata, reshapes that alias their input.
_NO_DEVICE_WORK = frozenset({
    "empty", "empty_strided", "new_empty", "new_empty_strided", "promote_types", "result_type",
    "_unsafe_view", "as_strided_", "is_same_size", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset",
})


@dataclass
class OpCount:
    total: int = 0  # every aten operation dispatched
    device: int = 0  # those that do device work (a kernel or a copy on a GPU)


class _Counter(TorchDispatchMode):
    def __init__(self, count: OpCount):
        super().__init__()
        self.count = count

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count.total += 1
        if not func.is_view and func.overloadpacket.__name__ not in _NO_DEVICE_WORK:
            self.count.device += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], T]) -> tuple[T, OpCount]:
    """Run ``fn()`` and return its result with the operations it dispatched (autograd's backward included)."""
    count = OpCount()
    with _Counter(count):
        result = fn()
    return result, count
