"""Where the project caches what it derives once (converted benchmark tables, the NB101 graph table)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$GRADSIGN_CACHE``, else ``$XDG_CACHE_HOME/gradsign``, else ``~/.cache/gradsign``."""
    if os.environ.get("GRADSIGN_CACHE"):
        return Path(os.environ["GRADSIGN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gradsign"
