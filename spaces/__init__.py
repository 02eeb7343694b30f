"""Search spaces: what an architecture is, how to build it, where its ground truth lives.

Public API (contract): ``spaces.get(name)`` returns a space with ``len(space)``, iteration over arch
strings in canonical order, ``space.build(arch, num_classes) -> nn.Module`` (initialised from the current
torch RNG state), ``space.canonical(arch)``, ``space.arch_id(arch)``, ``space.arch(arch_id)``,
``space.key(arch)`` (what ground-truth tables join on: NB201 the canonical arch string, NB101 the official
graph hash), ``space.key_column`` (None, or the column that carries the key: NB101 ``"hash"``) and
``space.sample_ids(size, seed)``. The protocol in full, and a base class to start from, are in
``spaces/base.py``.

Spaces plug in as proxies do. A user's module registers a factory (a class or any callable returning a
space)::

    from gradsign import spaces
    @spaces.register("myspace")
    class MySpace(spaces.Space):
        ...

and a run names it with ``space: myspace`` and lists the module under ``plugins:`` (imported in the
driver and in every actor, before the space is looked up). ``space: package.module:Name`` also works
without ``plugins``: the module is imported and ``Name`` called. This package knows nothing of Ray,
configs or run folders.
"""

from __future__ import annotations

import importlib
from typing import Callable

from .base import Space
from .darts import DartsSpace
from .darts_genotype import GenotypeError
from .nds import NDS_RULES, NDSSpace
from .nds import factory as nds_factory
from .nb101 import NB101Space
from .nb101_spec import SpecError
from .nb201 import ArchError, NB201Space

_SPACES: dict[str, Callable[[], object]] = {"nb201": NB201Space, "nb101": NB101Space, "darts": DartsSpace,
                                             **{name: nds_factory(name) for name in NDS_RULES}}
_INSTANCES: dict[str, object] = {}


def register(name: str) -> Callable[[Callable[[], object]], Callable[[], object]]:
    """Register ``factory() -> space`` under ``name``; a name registered twice is a ValueError."""

    def wrap(factory: Callable[[], object]) -> Callable[[], object]:
        if name in _SPACES and _SPACES[name] is not factory:
            raise ValueError(f"space {name!r} registered twice")
        _SPACES[name] = factory
        return factory

    return wrap


def names() -> list[str]:
    return sorted(_SPACES)


def _from_path(path: str):
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import space module {module_name!r} (from space {path!r}): {exc}") from None
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no {attr!r} (from space {path!r})") from None
    return factory


def get(name: str):
    """The space registered under ``name`` (or ``package.module:Name``), one instance per process.

    An unknown name is a ValueError listing the valid ones. The instance is shared so that a space's
    expensive state (NB101's table of all graphs) is made once per process.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a space name must be a non-empty string, got {name!r}")
    if name in _INSTANCES:
        return _INSTANCES[name]
    if name in _SPACES:
        factory = _SPACES[name]
    elif ":" in name:
        factory = _from_path(name)
    else:
        raise ValueError(f"unknown space {name!r}; valid spaces: {', '.join(names())} "
                         "(or package.module:Name, or a module listed under plugins that registers one)")
    space = factory()
    for attr in ("arch", "arch_id", "canonical", "build", "sample_ids"):
        if not callable(getattr(space, attr, None)):
            raise ValueError(f"space {name!r} ({type(space).__name__}) lacks {attr}(); see spaces/base.py")
    _INSTANCES[name] = space
    return space


def key_column(space) -> str | None:
    """The column carrying ``space.key`` in run files, or None when the key is the arch string."""
    return getattr(space, "key_column", None)


def key(space, arch: str) -> str:
    """``space.key(arch)``, or the canonical arch for a space without ``key``."""
    fn = getattr(space, "key", None)
    return fn(arch) if callable(fn) else space.canonical(arch)


__all__ = ["ArchError", "DartsSpace", "GenotypeError", "NB101Space", "NDSSpace", "NB201Space", "Space", "SpecError",
           "get", "key", "key_column", "names", "register"]
