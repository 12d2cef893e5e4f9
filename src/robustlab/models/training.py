"""Plain supervised training of small torch classifiers, seeded and cached on disk.

Used by the clean reference models ``digits-cnn`` / ``digits-mlp`` (:mod:`robustlab.models.zoo`),
a text classifier head and some benchmarks. Robust and certified training (noise, denoiser, IBP,
adversarial) runs in robustlab's one training loop instead (:mod:`robustlab.training`, the
``trained`` model), as do the registered ``digits-cnn-noise``, ``digits-cnn-denoised``,
``digits-*-ibp`` models.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from robustlab.core.paths import cache_dir
from robustlab.core.rng import seeded
from robustlab.data.base import Dataset


def train_classifier(
    make: Callable[[], nn.Module],
    data: Dataset,
    *,
    seed: int,
    epochs: int = 20,
    lr: float = 3e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
) -> nn.Module:
    """Train ``make()`` on ``data`` with Adam and cross-entropy, deterministically under ``seed``.

    ``weight_decay`` > 0 uses AdamW (decoupled weight decay, Loshchilov & Hutter, 2019) instead;
    ``batch_size`` >= ``len(data)`` is full-batch training (one step per epoch)."""
    g = torch.Generator().manual_seed(seed)
    with seeded(seed):
        net = make()
    x, y = data.x, data.y
    assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
    if weight_decay > 0:
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            net.parameters(), lr=lr, weight_decay=weight_decay
        )
    else:
        opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def cached_module(
    key: dict[str, object], make: Callable[[], nn.Module], train: Callable[[], nn.Module]
) -> nn.Module:
    """Load ``make()``'s weights from the cache under ``key``, or ``train()`` and cache them.

    Weights are stored as a state dict and loaded with ``weights_only=True`` (no pickled code).
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "models" / f"{key.get('name', 'model')}-{digest}.pt"
    if path.is_file():
        net = make()
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return net.eval()
        except (RuntimeError, ValueError, EOFError):
            path.unlink(missing_ok=True)  # corrupt cache entry: retrain
    net = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # unique: concurrent trainers
    torch.save(net.state_dict(), tmp)
    tmp.replace(path)
    return net
