"""Search spaces: what an architecture is, how to build it, where its ground truth lives.

Public API (contract): ``spaces.get(name)`` returns a space with ``len(space)``, iteration over arch
strings in canonical order, ``space.build(arch, num_classes) -> nn.Module`` (initialised from the current
torch RNG state), ``space.canonical(arch)``, ``space.arch_id(arch)`` and ``space.arch(arch_id)``.
This package knows nothing of Ray, configs or run folders.
"""

from __future__ import annotations

from typing import Callable

from .nb201 import ArchError, NB201Space

_SPACES: dict[str, Callable[[], object]] = {"nb201": NB201Space}


def names() -> list[str]:
    return sorted(_SPACES)


def get(name: str):
    """The space registered under ``name``; an unknown name is a ValueError listing the valid ones."""
    try:
        factory = _SPACES[name]
    except KeyError:
        raise ValueError(f"unknown space {name!r}; valid spaces: {', '.join(names())}") from None
    return factory()


__all__ = ["ArchError", "get", "names"]
