"""Zero-cost proxies, one module each, registered by name.

Public API (contract): ``get(name)`` returns a callable ``(net, inputs, targets) -> float`` usable on any
classifier ``nn.Module`` (it may change the net: pass a fresh one); ``names()`` lists the proxies.
"""

from . import gradsign  # noqa: F401  (each import registers its proxy)
from . import az_nas  # noqa: F401
from . import fisher, flops, grad_norm, grasp, jacob_cov, naswot, params, snip, swap, synflow  # noqa: F401
from . import meco  # noqa: F401
from . import zico  # noqa: F401
from .base import (PopulationScore, Proxy, Score, factory, get, load_plugins, names, population_scores, register,
                   register_population)

__all__ = ["PopulationScore", "Proxy", "Score", "factory", "get", "load_plugins", "names", "population_scores",
           "register", "register_population"]
