"""CTRL poisoning as a dataset transform (S26: Li et al., ICCV 2023): any registered image dataset
with a seeded ``rate`` of its examples carrying the CTRL frequency trigger
(:mod:`robustlab.perturbations.image.ctrl_trigger`), for the ``trained`` model to learn from.

Two settings:

- ``dirty-label`` (supervised backdoor, the default): ``round(rate * n)`` examples drawn
  (seeded) among those *not* of the ``target`` class get the trigger and the label ``target``;
- ``clean-label`` (the paper's self-supervised setting, labels never touched):
  ``round(rate * n)`` examples drawn among the ``target`` class get the trigger.

The paper poisons at most 1 % of the training data: a higher ``rate`` warns
(:class:`PoisonRateWarning`), above 50 % is refused (the "backdoor" would be the task).
Ids, metadata, domain and fields are kept; metadata gains ``poison`` (``"poisoned"`` or
``"clean"``), fields gain ``poisoned`` (bool ``[N]``) and ``clean_y`` (the labels before
poisoning), so detection defences can be scored against the ground truth.

Example (YAML, the training data of a ``trained`` model; or use the ``ctrl-poisoned`` model)::

    data: {name: ctrl-poisoned, params: {data: {name: fashion-mnist, params: {split: train,
           limit: 5000}}, target: 0, rate: 0.01, magnitude: 100}}
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.rng import seed_from
from robustlab.core.types import NonNegativeInt, Positive, Rate, Seed
from robustlab.data.base import Dataset
from robustlab.data.label_noise import count
from robustlab.perturbations.image.ctrl_trigger import ctrl_trigger, resolve

PAPER_RATE = 0.01  # the paper poisons <= 1 % of the training set
MAX_RATE = 0.5


class PoisonRateWarning(UserWarning):
    """A poison rate above the paper's 1 %."""


def choose(
    y: torch.Tensor, target: int, rate: float, mode: str, seed: int
) -> torch.Tensor:  # fmt: skip
    """The sorted indices of the examples to poison (see the module docstring); seeded."""
    pool = (y != target) if mode == "dirty-label" else (y == target)
    members = pool.nonzero().flatten()
    k = count(rate, len(y))
    if k > len(members):
        raise ConfigError(
            f"ctrl-poisoned: rate {rate:g} of {len(y)} examples is {k} poisons, but only "
            f"{len(members)} examples are {'outside' if mode == 'dirty-label' else 'in'} the "
            f"target class {target}"
        )
    g = torch.Generator().manual_seed(seed_from("ctrl-poison", mode, target, seed))
    return members[torch.randperm(len(members), generator=g)[:k]].sort().values


@datasets.register("ctrl-poisoned")
def ctrl_poisoned(
    data: dict[str, Any],
    target: NonNegativeInt = 0,
    rate: Rate = PAPER_RATE,
    mode: Literal["dirty-label", "clean-label"] = "dirty-label",
    magnitude: Positive = 100.0,
    window: int | None = None,
    positions: list[list[int]] | None = None,
    channels: list[int] | None = None,
    seed: Seed = 0,
) -> Dataset:
    """``data`` (a dataset spec ``{name, params}`` of images in [0, 1]) with ``rate`` of its
    examples poisoned by the CTRL trigger (``magnitude``, ``window``, ``positions``,
    ``channels``: see :func:`~robustlab.perturbations.image.ctrl_trigger.ctrl_trigger`) towards
    class ``target``, in ``mode`` ``dirty-label`` (relabelled) or ``clean-label``; ground truth
    in ``fields["poisoned"]`` and ``meta["poison"]``. See the module docstring."""
    if not isinstance(data, dict) or "name" not in data or set(data) - {"name", "params"}:
        raise ConfigError(
            f"ctrl-poisoned: data must be a dataset spec {{name: ..., params: {{...}}}}, got {data!r}"
        )
    if rate > MAX_RATE:
        raise ConfigError(f"ctrl-poisoned: rate {rate:g} is above {MAX_RATE:g}: refused (the "
                          f"paper poisons <= {PAPER_RATE:.0%})")  # fmt: skip
    if rate > PAPER_RATE:
        warnings.warn(f"ctrl-poisoned: rate {rate:g} is above the paper's {PAPER_RATE:.0%}",
                      PoisonRateWarning, stacklevel=2)  # fmt: skip
    base = datasets.create(data["name"], data.get("params") or {})
    if not isinstance(base.x, torch.Tensor) or base.x.dim() != 4:
        raise ConfigError(f"ctrl-poisoned: dataset {data['name']!r} is not a batch of images")
    if not isinstance(base.y, torch.Tensor) or base.y.dtype not in (torch.int64, torch.int32):
        raise ConfigError(f"ctrl-poisoned: dataset {data['name']!r} has no integer class labels")
    k = len(base.classes) if base.classes else int(base.y.max()) + 1 if len(base.y) else 0
    if not 0 <= target < k:
        raise ConfigError(f"ctrl-poisoned: target class {target} is not in 0..{k - 1}")
    resolve(tuple(base.x.shape[1:]), window, positions, channels)  # refuse a bad trigger early
    clean = base.y.long()
    idx = choose(clean, target, rate, mode, seed)
    x = base.x.clone()
    if len(idx):
        x[idx] = ctrl_trigger(base.x[idx], magnitude, window, positions, channels)
    y = clean.clone()
    if mode == "dirty-label":
        y[idx] = target
    flag = torch.zeros(len(y), dtype=torch.bool)
    flag[idx] = True
    meta = {**base.meta, "poison": ["poisoned" if f else "clean" for f in flag.tolist()]}
    return Dataset(
        x=x,
        y=y,
        name=f"{base.name}-ctrl-{mode}-{rate:g}",
        ids=base.ids,
        meta=meta,
        domain=base.domain,
        classes=base.classes,
        fields={**base.fields, "poisoned": flag, "clean_y": clean},
    )
