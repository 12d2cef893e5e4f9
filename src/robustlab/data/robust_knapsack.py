"""A generated family of two-stage robust knapsack instances (S24), one instance per example.

Each example's ``x`` is an :class:`robustlab.optim.knapsack.Instance` drawn by
:func:`robustlab.optim.knapsack.generate` with seed ``seed * count + k`` (ids are those seeds, so
two families with different ``seed`` share no instance); ``y`` is None (the reference optimum is
computed by the ``neur2ro`` diagnosis with exact CCG). Held-out by construction: Neur2RO's value
network trains on seeds from :data:`robustlab.optim.neur2ro.TRAIN_SEED_OFFSET` on.

Example::

    data: {name: robust-knapsack, params: {n_items: 8, gamma: 2, count: 20}}
"""

from __future__ import annotations

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.types import NonNegativeInt, PositiveInt, Seed
from robustlab.data.base import Dataset
from robustlab.optim.knapsack import generate
from robustlab.optim.neur2ro import TRAIN_SEED_OFFSET


@datasets.register("robust-knapsack")
def robust_knapsack(
    n_items: PositiveInt = 8,
    gamma: NonNegativeInt = 2,
    count: PositiveInt = 20,
    min_items: NonNegativeInt = 0,
    seed: Seed = 0,
) -> Dataset:
    """``count`` instances with ``n_items`` items and uncertainty budget ``gamma``."""
    if gamma > n_items:
        raise ConfigError(f"robust-knapsack: gamma {gamma} exceeds n_items {n_items}")
    seeds = [seed * count + k for k in range(count)]
    if seeds[-1] >= TRAIN_SEED_OFFSET:
        raise ConfigError("robust-knapsack: seed * count must stay below the training seeds")
    insts = [generate(n_items, gamma, s, min_items) for s in seeds]
    return Dataset(
        insts,
        [None] * count,
        name=f"robust-knapsack-n{n_items}-g{gamma}",
        ids=torch.tensor(seeds),
        meta={"n_items": [n_items] * count, "gamma": [gamma] * count},
    )
