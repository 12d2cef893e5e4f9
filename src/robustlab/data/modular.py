"""Modular arithmetic with corrupted training labels (S28, Doshi et al., "To grok or not to grok:
Disentangling generalization and memorization on corrupted algorithmic datasets", ICLR 2024).

Every pair ``(a, b)`` of ``Z_p x Z_p`` is one example, labelled ``(a op b + shift) mod p``; the
input is the concatenation of the one-hot vectors of ``a`` and ``b`` (``[N, 2p]`` float, the
paper's MLP input). A seeded permutation of the ``p^2`` pairs puts ``round(train_fraction * p^2)``
in the train split and the rest in the test split. In the train split exactly ``round(noise *
n_train)`` labels (a seeded uniform choice) are replaced by a uniformly drawn *wrong* result
(robustlab's label noise, :func:`robustlab.data.label_noise.inject` with ``draw: other``); the
test split is always clean. ``fields["clean_y"]`` holds the true results, ``meta["corrupted"]``
flags the corrupted examples, ``meta["a"]``/``meta["b"]`` the operands. Example ids are the pair's
index ``a * p + b`` (the same pair has the same id in every split, op and noise).

Example::

    d = datasets.create("modular-arithmetic", {"p": 47, "split": "train", "noise": 0.1})
    d.x.shape, sum(d.meta["corrupted"])          # (torch.Size([1325, 94]), 133)

    # S45's procedurally defined tasks: op A for pretraining, a shifted copy for fine-tuning
    data: {name: modular-arithmetic, params: {p: 23, op: add, shift: 5, split: train}}
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.rng import seed_from
from robustlab.core.types import Domain, NonNegativeInt, PositiveInt, Rate, Seed
from robustlab.data.base import Dataset
from robustlab.data.label_noise import count, inject

Op = Literal["add", "sub", "mul"]


def results(a: torch.Tensor, b: torch.Tensor, p: int, op: str, shift: int = 0) -> torch.Tensor:
    """``(a op b + shift) mod p`` (int64), batched."""
    if op == "add":
        r = a + b
    elif op == "sub":
        r = a - b
    elif op == "mul":
        r = a * b
    else:
        raise ConfigError(f"modular-arithmetic: op must be add, sub or mul, got {op!r}")
    return (r + shift) % p


def one_hot_pairs(a: torch.Tensor, b: torch.Tensor, p: int) -> torch.Tensor:
    """The MLP input of the pairs: ``[one_hot(a), one_hot(b)]``, ``[N, 2p]`` float32."""
    return torch.cat([F.one_hot(a, p), F.one_hot(b, p)], 1).float()


@datasets.register("modular-arithmetic")
def modular_arithmetic(
    p: PositiveInt = 47,
    op: Op = "add",
    shift: NonNegativeInt = 0,
    split: Literal["train", "test", "all"] = "train",
    train_fraction: Rate = 0.6,
    noise: Rate = 0.0,
    seed: Seed = 0,
) -> Dataset:
    """All pairs ``(a, b)`` mod ``p`` labelled ``(a op b + shift) mod p``, one-hot inputs; the
    ``train`` split (``train_fraction`` of the pairs, seeded by ``seed``) has exactly
    ``round(noise * n)`` corrupted (wrong) labels, flagged in ``meta["corrupted"]``; ``test`` is
    clean, ``all`` is every pair, clean. See the module docstring."""
    if p < 3:
        raise ConfigError(f"modular-arithmetic: p must be at least 3, got {p}")
    if not 0 < train_fraction < 1 and split != "all":
        raise ConfigError(
            f"modular-arithmetic: train_fraction must lie in (0, 1), got {train_fraction}"
        )
    pairs = torch.arange(p * p)
    if split != "all":
        g = torch.Generator().manual_seed(seed_from("modular-split", p, seed))
        perm = torch.randperm(p * p, generator=g)
        n_train = count(train_fraction, p * p)
        if n_train in (0, p * p):
            raise ConfigError(
                f"modular-arithmetic: train_fraction {train_fraction} of {p * p} pairs leaves an "
                "empty split"
            )
        pairs = (perm[:n_train] if split == "train" else perm[n_train:]).sort().values
    a, b = pairs // p, pairs % p
    clean = results(a, b, p, op, shift)
    y = clean
    if split == "train" and noise > 0:
        y = inject(clean, p, "symmetric", rate=noise, seed=seed_from("modular", p, op, seed),
                   draw="other")  # fmt: skip
    corrupted = (y != clean).tolist()
    return Dataset(
        one_hot_pairs(a, b, p),
        y,
        name=f"modular-{op}{'+' + str(shift) if shift else ''}-p{p}-{split}",
        ids=pairs,
        meta={"a": a.tolist(), "b": b.tolist(), "corrupted": corrupted},
        domain=Domain(0.0, 1.0, (2 * p,)),
        classes=[str(i) for i in range(p)],
        fields={"clean_y": clean},
    )
