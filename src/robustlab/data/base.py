"""Data sources: examples with labels, stable ids and per-example metadata."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.types import Domain


@dataclass
class Dataset:
    """A batch-addressable set of examples.

    ``x`` is a tensor (images, features) or a list (texts, prompts, queries); ``y`` the labels (a tensor
    of class ids, or a list of references for generation/ranking tasks); ``ids`` stable integer ids
    (used to key per-example randomness and records); ``meta`` maps column names to one value per
    example -- slices select subpopulations by these columns. ``fields`` maps names to per-example
    tensors (first dimension = examples) that are not metadata but inputs of probes, e.g. object
    masks ``fields["mask"]`` ``[N, 1, H, W]`` for the attribute-edit perturbations; they follow
    ``take``/``shard`` and the classification task passes them to perturbations that accept them.
    """

    x: torch.Tensor | list[Any]
    y: torch.Tensor | list[Any]
    name: str = "data"
    ids: torch.Tensor | None = None
    meta: dict[str, list[Any]] = field(default_factory=dict)
    domain: Domain | None = None
    classes: list[str] | None = None
    fields: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.x)
        if len(self.y) != n:
            raise ConfigError(f"dataset {self.name!r}: {n} inputs but {len(self.y)} labels")
        if self.ids is None:
            self.ids = torch.arange(n)
        for col, vals in self.meta.items():
            if len(vals) != n:
                raise ConfigError(
                    f"dataset {self.name!r}: meta column {col!r} has {len(vals)} values for {n} examples"
                )
        for col, t in self.fields.items():
            if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != n:
                raise ConfigError(
                    f"dataset {self.name!r}: field {col!r} must be a tensor with {n} rows"
                )

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: Sequence[int] | torch.Tensor) -> Dataset:
        """The examples at ``index`` (keeps ids and metadata)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        il = idx.tolist()
        x = self.x[idx] if isinstance(self.x, torch.Tensor) else [self.x[i] for i in il]
        y = self.y[idx] if isinstance(self.y, torch.Tensor) else [self.y[i] for i in il]
        assert self.ids is not None
        meta = {k: [v[i] for i in il] for k, v in self.meta.items()}
        fields = {k: v[idx] for k, v in self.fields.items()}
        return Dataset(x, y, self.name, self.ids[idx], meta, self.domain, self.classes, fields)

    def shard(self, i: int, size: int) -> Dataset:
        """Shard ``i`` of consecutive examples of ``size``."""
        return self.take(range(i * size, min(len(self), (i + 1) * size)))

    def num_shards(self, size: int) -> int:
        return max(1, -(-len(self) // size))


ARRAY_CACHE_FORMAT = 1  # bump when the layout of cached array files changes
_KEY = "__key__"  # each entry stores the JSON of its key, checked when it is read


def cached_arrays(
    key: dict[str, Any],
    build: Callable[[], dict[str, np.ndarray]],
    packages: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """``build()``'s arrays, cached on disk under the content hash of ``key`` (JSON data) and the
    installed versions of numpy and of ``packages`` (distribution names).

    For data sources whose preparation costs more than reading the result (scikit-learn's digits:
    importing scikit-learn and splitting take ~1 s, reading the cached split ~1 ms). ``key`` must
    name everything else the arrays depend on: a changed key is a new entry. Where one of
    ``packages`` is not installed, ``build()`` runs uncached (and says what to install).
    Entries are ``.npz`` files under ``cache_dir()/data`` written atomically (temporary file, then
    rename) and read with ``allow_pickle=False``; each stores the JSON of its key, and an entry
    that cannot be read or names another key is rebuilt. Each call returns fresh arrays (never
    shared between callers). Arrays of objects cannot be cached: build them as numeric or
    fixed-width string arrays.

    Example::

        arrays = cached_arrays({"name": "digits", "split": "test", "v": 1}, make_arrays,
                               packages=["scikit-learn"])
    """
    from importlib.metadata import PackageNotFoundError, version

    from robustlab.core.paths import cache_dir

    try:
        versions = {p: version(p) for p in ("numpy", *packages)}
    except PackageNotFoundError:
        return build()
    payload = json.dumps([ARRAY_CACHE_FORMAT, key, versions], sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:24]
    path = cache_dir() / "data" / f"{key.get('name', 'data')}-{digest}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            if str(arrays.pop(_KEY, "")) == payload:  # the entry names its own key
                return arrays
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            pass
        path.unlink(missing_ok=True)  # corrupt or foreign entry: rebuild
    arrays = build()
    if _KEY in arrays:
        raise ValueError(f"cached_arrays: {_KEY!r} is reserved")
    tmp = Path(f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz")  # concurrent writers
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays, **{_KEY: np.array(payload)})
        tmp.replace(path)
    except OSError:  # a read-only cache only costs the rebuild next time
        tmp.unlink(missing_ok=True)
    return arrays
