"""Label noise as a dataset transform: any registered dataset with a seeded fraction of its labels
corrupted, the clean labels kept (``fields["clean_y"]``) so memorisation can be measured.

Two noise models, as in the noisy-label literature and ELR's experiments (Liu et al., NeurIPS 2020,
"Early-Learning Regularization Prevents Memorization of Noisy Labels", Sec. 5 and its code):

- ``symmetric``: exactly ``round(rate * n)`` examples (a seeded uniform choice) get a label drawn
  uniformly at random. ``draw: any`` (default, ELR's definition: its code resamples the chosen
  labels from *all* classes) lets the draw hit the true class, so the expected fraction of wrong
  labels is ``rate * (K - 1) / K``; ``draw: other`` draws among the K - 1 *other* classes, so
  exactly ``round(rate * n)`` labels are wrong.
- ``asymmetric``: class-dependent flips to a fixed similar class (ELR's CIFAR-10 map: truck ->
  automobile, bird -> airplane, deer -> horse, cat <-> dog). For each source class c of the map,
  exactly ``round(rate * n_c)`` of its ``n_c`` examples (seeded) get ``flips[c]``; other classes
  are untouched. Built-in maps: Fashion-MNIST ``t-shirt/top <-> shirt, pullover -> coat,
  sandal -> sneaker`` (:data:`FASHION_FLIPS`) and digits ``2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1`` (the
  MNIST map of Patrini et al., CVPR 2017; :data:`DIGIT_FLIPS`), chosen by the dataset's class
  names; any other dataset needs ``flips``.

``round`` is round-half-up. Ids, inputs, metadata, domain and other fields are kept; metadata gains
``label_noise`` (``"flipped"`` where the label now differs from the clean one, else ``"kept"``),
so reports can slice by it.

Example::

    d = datasets.create("noisy-labels", {
        "data": {"name": "fashion-mnist", "params": {"split": "train", "limit": 5000}},
        "kind": "symmetric", "rate": 0.4, "seed": 0})
    (d.y != d.fields["clean_y"]).float().mean()     # ~0.36 (draw: any), 0.4 with draw: other

    # a noisy training set for the ``trained`` model (YAML)
    data: {name: noisy-labels, params: {data: {name: digits, params: {split: train}},
                                        kind: asymmetric, rate: 0.3}}
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.rng import seed_from
from robustlab.core.types import Rate, Seed
from robustlab.data.base import Dataset

FASHION_FLIPS = {0: 6, 6: 0, 2: 4, 5: 7}  # t-shirt <-> shirt, pullover -> coat, sandal -> sneaker
DIGIT_FLIPS = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}  # Patrini et al. (2017), MNIST


def count(rate: float, n: int) -> int:
    """The number of labels a ``rate`` corrupts among ``n``: ``round(rate * n)``, half up."""
    return int(math.floor(rate * n + 0.5))


def inject(
    y: torch.Tensor,
    num_classes: int,
    kind: Literal["symmetric", "asymmetric"] = "symmetric",
    rate: float = 0.4,
    seed: int = 0,
    draw: Literal["any", "other"] = "any",
    flips: dict[int, int] | None = None,
) -> torch.Tensor:
    """Noisy copy of the int64 labels ``y`` (see the module docstring); a pure function of its
    arguments (a generator seeded from ``seed``), batched (one permutation per class at most)."""
    if not 0 <= rate <= 1:
        raise ConfigError(f"label noise rate must lie in [0, 1], got {rate!r}")
    g = torch.Generator().manual_seed(seed_from("label-noise", kind, seed))
    y = y.detach().cpu().long()
    out = y.clone()
    if kind == "symmetric":
        if num_classes < 2:
            raise ConfigError(f"symmetric label noise needs at least 2 classes, got {num_classes}")
        pick = torch.randperm(len(y), generator=g)[: count(rate, len(y))]
        if draw == "any":
            out[pick] = torch.randint(num_classes, (len(pick),), generator=g)
        else:  # a uniform shift in 1..K-1: uniform over the other classes
            shift = torch.randint(1, num_classes, (len(pick),), generator=g)
            out[pick] = (y[pick] + shift) % num_classes
        return out
    if kind != "asymmetric":
        raise ConfigError(f"label noise kind must be 'symmetric' or 'asymmetric', got {kind!r}")
    if not flips:
        raise ConfigError("asymmetric label noise needs a non-empty class map 'flips'")
    for src, dst in sorted(flips.items()):
        for c in (src, dst):
            if not 0 <= c < num_classes:
                raise ConfigError(f"label noise flips {src} -> {dst}: class {c} is not in "
                                  f"0..{num_classes - 1}")  # fmt: skip
        if src == dst:
            raise ConfigError(f"label noise flips: class {src} maps to itself")
        members = (y == src).nonzero().flatten()
        order = torch.randperm(len(members), generator=g)
        out[members[order[: count(rate, len(members))]]] = dst
    return out


def default_flips(d: Dataset) -> dict[int, int] | None:
    """The built-in asymmetric map for ``d`` by its class names (Fashion-MNIST, digits), or None."""
    from robustlab.data.images import FASHION_CLASSES

    if d.classes == FASHION_CLASSES:
        return dict(FASHION_FLIPS)
    if d.classes == [str(i) for i in range(10)]:
        return dict(DIGIT_FLIPS)
    return None


@datasets.register("noisy-labels")
def noisy_labels(
    data: dict[str, Any],
    kind: Literal["symmetric", "asymmetric"] = "symmetric",
    rate: Rate = 0.4,
    seed: Seed = 0,
    draw: Literal["any", "other"] = "any",
    flips: dict[int, int] | None = None,
) -> Dataset:
    """``data`` (a dataset spec ``{name, params}``) with a ``rate`` of its labels corrupted by
    ``kind`` noise under ``seed``; clean labels in ``fields["clean_y"]``. ``draw`` (symmetric):
    ``any`` class (ELR's definition) or only ``other`` classes. ``flips`` (asymmetric): source ->
    target class map (default: built in for Fashion-MNIST and digits). See the module docstring.
    """
    if not isinstance(data, dict) or "name" not in data or set(data) - {"name", "params"}:
        raise ConfigError(
            f"noisy-labels: data must be a dataset spec {{name: ..., params: {{...}}}}, got {data!r}"
        )
    base = datasets.create(data["name"], data.get("params") or {})
    if not isinstance(base.y, torch.Tensor) or base.y.dtype not in (torch.int64, torch.int32):
        raise ConfigError(f"noisy-labels: dataset {data['name']!r} has no integer class labels")
    k = len(base.classes) if base.classes else int(base.y.max()) + 1 if len(base.y) else 0
    if kind == "symmetric" and flips is not None:
        raise ConfigError("noisy-labels: flips is a class map for kind: asymmetric, not symmetric")
    if kind == "asymmetric" and flips is None:
        flips = default_flips(base)
        if flips is None:
            raise ConfigError(
                f"noisy-labels: no built-in asymmetric class map for dataset {data['name']!r} "
                "(built in: fashion-mnist, digits); give one as flips: {source: target, ...}"
            )
    clean = base.y.long()
    y = inject(clean, k, kind, rate, seed, draw, flips)
    flipped = (y != clean).tolist()
    meta = {**base.meta, "label_noise": ["flipped" if f else "kept" for f in flipped]}
    return Dataset(
        x=base.x,
        y=y,
        name=f"{base.name}-noisy-{kind}-{rate:g}",
        ids=base.ids,
        meta=meta,
        domain=base.domain,
        classes=base.classes,
        fields={**base.fields, "clean_y": clean},
    )
