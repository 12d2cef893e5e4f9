"""Neur2RO's second-stage value network for the robust knapsack family (S24), trained locally.

``phi(x, xi, instance) ~ Q(x, xi)`` (:mod:`robustlab.optim.neur2ro`): a one-output ReLU MLP trained
on ``instances * per`` sampled triples labelled by the exact second stage, cached on disk under
every hyperparameter. Used by the ``neur2ro`` diagnosis on ``robust-knapsack`` data.

Example::

    models:
      - {name: neur2ro-knapsack, params: {n_items: 8, gamma: 2}}
"""

from __future__ import annotations

from robustlab.core.registry import models
from robustlab.core.types import NonNegativeInt, PositiveInt, Seed
from robustlab.optim.neur2ro import ValueNetwork, train_value_network


@models.register("neur2ro-knapsack")
def neur2ro_knapsack(
    n_items: PositiveInt = 8,
    gamma: NonNegativeInt = 2,
    hidden: PositiveInt = 16,
    instances: PositiveInt = 300,
    per: PositiveInt = 64,
    epochs: PositiveInt = 150,
    seed: Seed = 0,
) -> ValueNetwork:
    """One hidden ReLU layer of ``hidden`` neurons, Adam on MSE for ``epochs`` epochs."""
    return train_value_network(n_items, gamma, (hidden,), instances, per, epochs, seed)
