"""The proxy registry and the value a proxy returns."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Score(float):
    """A proxy's value (a float) that may carry how many non-finite gradient entries were left out.

    ``nonfinite > 0`` flags the row: the value is still the sum over finite entries, but correlations
    leave it out.
    """

    nonfinite: int

    def __new__(cls, value: float, nonfinite: int = 0) -> "Score":
        obj = super().__new__(cls, value)
        obj.nonfinite = int(nonfinite)
        return obj


def weight_gradients(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0,
                     create_graph: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, dL/dweight) for every Conv2d/Linear weight that gets a gradient, L = mean cross-entropy of
    ``net(inputs) / temperature`` on ``targets``, in training mode (works under an outer ``no_grad``)."""
    from ..layers import weighted_layers

    net.train()
    weights = [m.weight for _, m in weighted_layers(net)]
    if not weights:
        return []
    with torch.enable_grad():
        for w in weights:
            w.requires_grad_(True)
        loss = F.cross_entropy(net(inputs) / temperature, targets)
        grads = torch.autograd.grad(loss, weights, create_graph=create_graph, allow_unused=True)
    return [(w, g) for w, g in zip(weights, grads) if g is not None]


class Proxy(Protocol):
    def __call__(self, net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float: ...


ProxyFactory = Callable[..., Proxy]
_REGISTRY: dict[str, ProxyFactory] = {}


def register(name: str) -> Callable[[ProxyFactory], ProxyFactory]:
    """Register ``factory(**options) -> Proxy`` under ``name`` (one proxy per module)."""

    def wrap(factory: ProxyFactory) -> ProxyFactory:
        if name in _REGISTRY:
            raise ValueError(f"proxy {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def load_plugins(modules: Sequence[str]) -> None:
    """Import modules that register their own proxies (``@register``); a missing one is a ValueError."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"cannot import proxy plugin {module!r}: {exc}") from exc


def names() -> list[str]:
    return sorted(_REGISTRY)


def factory(name: str) -> ProxyFactory:
    """The registered factory of proxy ``name`` (its keyword parameters are the proxy's options)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown proxy {name!r}; valid proxies: {', '.join(names())}") from None


def get(name: str, **options) -> Proxy:
    """The proxy ``name`` as a callable ``(net, inputs, targets) -> float``; ``options`` tune it."""
    return factory(name)(**options)


@dataclass(frozen=True)
class PopulationScore:
    """A score defined over a population, not per arch (AZ-NAS's rank aggregate): ``compute`` maps the
    per-arch columns ``inputs`` (aligned value lists of the archs scored together) to one value per arch.

    A run whose proxies include every input gets the column ``name`` from the reducer, computed over the
    archs the run has scored so far (so a value is relative to that population, and changes as a partial
    run grows); score files keep only the per-arch inputs."""

    name: str
    inputs: tuple[str, ...]
    compute: Callable[[Mapping[str, Sequence[float]]], list[float]]


_POPULATION: dict[str, PopulationScore] = {}


def register_population(name: str, inputs: Sequence[str]) -> Callable[[Callable], Callable]:
    """Register ``compute(columns) -> values`` as the population score ``name`` over the columns ``inputs``."""

    def wrap(compute: Callable) -> Callable:
        if name in _POPULATION or name in _REGISTRY:
            raise ValueError(f"score {name!r} registered twice")
        _POPULATION[name] = PopulationScore(name, tuple(inputs), compute)
        return compute

    return wrap


def population_scores(proxy_names: Sequence[str]) -> list[PopulationScore]:
    """The population scores whose inputs are all among ``proxy_names``, in name order."""
    have = set(proxy_names)
    return [_POPULATION[n] for n in sorted(_POPULATION) if set(_POPULATION[n].inputs) <= have]
