"""Where robustlab keeps files (created on first use, never at import time)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$ROBUSTLAB_CACHE``, else ``$XDG_CACHE_HOME/robustlab``, else ``~/.cache/robustlab``."""
    env = os.environ.get("ROBUSTLAB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "robustlab"
