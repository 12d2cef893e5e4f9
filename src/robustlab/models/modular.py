"""MLPs for modular arithmetic (S28 memorisation, S45 fine-tuning), trained full-batch with AdamW.

The paper's network (Doshi et al., ICLR 2024, "To grok or not to grok", Sec. 2): the input is
``[one_hot(a), one_hot(b)]`` (``2p``), a hidden layer of ``hidden`` neurons without bias,
``h = phi(U e_a + V e_b)`` with the quadratic activation ``phi(z) = z^2`` (or ReLU), and a linear
readout ``W h`` to the ``p`` classes; ``depth: 2`` adds a second hidden layer (S45 probes the layers).
Layer names (for :func:`robustlab.diagnose.features.extract`): ``net.inp``, ``net.act1``,
``net.mid``, ``net.act2`` (depth 2), ``net.out``.

Training: full batch, AdamW (decoupled ``weight_decay``), cross-entropy, ``steps`` steps, seeded;
cached on disk (:func:`robustlab.models.training.cached_module`) under the data's content hash and
every hyperparameter. ``init`` (a model spec of another ``modular-mlp``) starts from its weights:
fine-tuning (S45).

Example::

    models:
      - name: modular-mlp
        label: wd-1
        params:
          data: {name: modular-arithmetic, params: {p: 47, noise: 0.1, split: train}}
          weight_decay: 1.0
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Literal

import torch
from torch import nn

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models
from robustlab.core.types import NonNegative, Positive, PositiveInt, Seed
from robustlab.models.base import hash_tensors
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.trained import spec_param
from robustlab.models.training import cached_module, train_classifier

DEFAULT_DATA = {"name": "modular-arithmetic", "params": {"split": "train", "noise": 0.1}}


class Square(nn.Module):
    """The quadratic activation ``z -> z^2`` of the paper's analytic solution."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * z


class ModularMLP(nn.Module):
    """``[one_hot(a), one_hot(b)] -> phi(U e_a + V e_b) [-> phi(M .)] -> W .`` (no biases)."""

    def __init__(
        self, p: int, hidden: int = 256, classes: int | None = None, depth: int = 1,
        activation: str = "quadratic",
    ) -> None:  # fmt: skip
        super().__init__()
        act = Square if activation == "quadratic" else nn.ReLU
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["inp"] = nn.Linear(2 * p, hidden, bias=False)
        layers["act1"] = act()
        if depth == 2:
            layers["mid"] = nn.Linear(hidden, hidden, bias=False)
            layers["act2"] = act()
        layers["out"] = nn.Linear(hidden, classes or p, bias=False)
        self.p = p
        self.net = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hidden_layers(module: nn.Module) -> list[str]:
    """The activation layers of a :class:`ModularMLP` (``net.act1``, ``net.act2``), in order."""
    return [f"net.{n}" for n in module.net._modules if n.startswith("act")]  # type: ignore[union-attr]


def prune(clf: TorchClassifier, neurons: torch.Tensor, layer: str = "net.act1") -> TorchClassifier:
    """A copy of ``clf`` with the hidden ``neurons`` (indices) of activation ``layer`` removed: the
    rows of the ``nn.Linear`` before it and the columns of the one after it set to zero, so those
    neurons output 0 and nothing reads them. ``clf`` is left unchanged."""
    net = copy.deepcopy(clf.module)
    names = list(net.net._modules)  # type: ignore[union-attr]
    short = layer.removeprefix("net.")
    if short not in names or not short.startswith("act"):
        raise ConfigError(
            f"prune: {layer!r} is not a hidden layer; these are: {hidden_layers(net)}"
        )
    i = names.index(short)
    before, after = net.net[i - 1], net.net[i + 1]  # type: ignore[index]
    idx = torch.as_tensor(neurons, dtype=torch.long)
    with torch.no_grad():
        before.weight[idx, :] = 0
        after.weight[:, idx] = 0
    out = TorchClassifier(net, clf.num_classes, clf.domain, name=clf.name)
    out.provenance = getattr(clf, "provenance", {})
    return out


@models.register("modular-mlp")
def modular_mlp(
    data: spec_param("datasets") | None = None,  # type: ignore[valid-type]
    hidden: PositiveInt = 256,
    depth: Literal[1, 2] = 1,
    activation: Literal["quadratic", "relu"] = "quadratic",
    steps: PositiveInt = 3000,
    lr: Positive = 0.005,
    weight_decay: NonNegative = 1.0,
    seed: Seed = 0,
    init: spec_param("models") | None = None,  # type: ignore[valid-type]
) -> TorchClassifier:
    """An MLP trained full-batch with AdamW (``weight_decay``) for ``steps`` steps on ``data``
    (default: modular addition mod 47, 60 % train pairs, 10 % corrupted labels), one-hot pair
    inputs, ``hidden`` neurons per layer (``depth`` 1 or 2, ``activation`` quadratic or ReLU);
    ``init`` (a ``modular-mlp`` spec): fine-tune its weights instead (its architecture is kept).
    Cached. S28/S45; see the module docstring."""
    spec = DEFAULT_DATA if data is None else data
    dset = datasets.create(spec["name"], spec.get("params") or {})
    if not isinstance(dset.x, torch.Tensor) or dset.x.dim() != 2 or dset.x.shape[1] % 2:
        raise ConfigError(
            f"modular-mlp: data {spec['name']!r} must have one-hot pair inputs [N, 2p] "
            "(e.g. modular-arithmetic)"
        )
    p = dset.x.shape[1] // 2
    classes = len(dset.classes) if dset.classes else p
    start: TorchClassifier | None = None
    if init is not None:
        start = models.create(init["name"], init.get("params") or {})
        if not isinstance(getattr(start, "module", None), ModularMLP) or start.module.p != p:
            raise ConfigError(
                f"modular-mlp: init must be a modular-mlp over the same p ({p}), got {init!r}"
            )

    def make() -> nn.Module:
        if start is not None:
            return copy.deepcopy(start.module)
        return ModularMLP(p, hidden, classes, depth, activation)

    def train() -> nn.Module:
        return train_classifier(make, dset, seed=seed, epochs=steps, lr=lr,
                                batch_size=len(dset), weight_decay=weight_decay)  # fmt: skip

    key = {
        "name": "modular-mlp", "v": 1, "data": spec,
        "data_hash": hash_tensors([dset.x, torch.as_tensor(dset.y)]),
        "hidden": hidden, "depth": depth, "activation": activation, "steps": steps, "lr": lr,
        "weight_decay": weight_decay, "seed": seed,
        "init": None if start is None else start.fingerprint(),
    }  # fmt: skip
    net = cached_module(key, make, train)
    clf = TorchClassifier(net, classes, dset.domain, name="modular-mlp")
    clf.provenance = {"spec": {k: v for k, v in key.items() if k != "data_hash"}}
    return clf


def retrain(
    clf: TorchClassifier, data: Any, steps: int, lr: float, seed: int = 0
) -> TorchClassifier:
    """A copy of ``clf`` trained ``steps`` full-batch Adam steps on ``data`` (not cached): the
    revival runs of S45."""
    net = train_classifier(lambda: copy.deepcopy(clf.module), data, seed=seed, epochs=steps,
                           lr=lr, batch_size=len(data))  # fmt: skip
    return TorchClassifier(net, clf.num_classes, clf.domain, name=clf.name)
