"""A trained model's cache folder: per-epoch checkpoint, final weights and provenance.

``<cache>/models/trained-<key hash>/`` holds ``checkpoint.pt`` (rewritten after every epoch: model
and optimizer state, the history so far, the best epoch's weights when kept) while training runs,
and ``model.pt`` (weights + provenance) once it has finished; the checkpoint is then deleted. Files
are written to a unique temporary name and renamed, so a kill at any point leaves either the
previous file or the new one, never half of one. Everything is loaded with ``weights_only=True``
(tensors and plain containers only: no pickled code runs). :meth:`TrainingFolder.lock` (an
exclusive ``flock`` on ``lock``) makes a second process asking for the same model wait for the
first and then load its result, instead of training it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from robustlab.core.paths import cache_dir


def key_digest(key: dict[str, Any]) -> str:
    """Stable 16-hex-digit digest of a JSON-able cache key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class TrainingFolder:
    """The cache folder of one trained model (see the module docstring)."""

    def __init__(self, key: dict[str, Any], root: Path | None = None) -> None:
        self.key = key
        self.path = (root or cache_dir() / "models") / f"trained-{key_digest(key)}"

    @property
    def final(self) -> Path:
        return self.path / "model.pt"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's exclusive lock (released when the process dies, even by SIGKILL)."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): concurrent trainers both train, atomically
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def load_final(self) -> dict[str, Any] | None:
        return self._load(self.final)

    def load_checkpoint(self) -> dict[str, Any] | None:
        return self._load(self.checkpoint)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self._save(self.checkpoint, state)

    def save_final(self, state: dict[str, Any]) -> None:
        self._save(self.final, state)
        (self.path / "provenance.json").write_text(
            json.dumps(state["provenance"], indent=1, sort_keys=True)
        )
        self.checkpoint.unlink(missing_ok=True)

    def _save(self, path: Path, state: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            torch.save(state, tmp)
            tmp.replace(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _load(self, path: Path) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # unreadable (truncated by a full disk, foreign): start over
            warnings.warn(f"ignoring unreadable training file {path}: {e}", stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        if not isinstance(state, dict) or state.get("key") != self.key:
            warnings.warn(f"ignoring training file {path}: written for another spec", stacklevel=2)
            return None
        return state
