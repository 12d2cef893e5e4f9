"""S45: was a capability removed by fine-tuning, or only wrapped? Probing, pruning and revival.

Jain et al., "Mechanistically analyzing the effects of fine-tuning on procedurally defined tasks"
(ICLR 2024): fine-tuning rarely removes a pretrained capability; it learns a minimal *wrapper* on
top of it. Three tools tell the cases apart (their Sec. 4-5), all implemented here for a
``modular-mlp`` pretrained on an old task (say ``(a + b) mod p``) and fine-tuned on a new one:

* **probing**: a linear probe (ridge classifier, :func:`ridge_probe`) fitted on the hidden layers'
  features of the old task's ``fit`` split predicts the *old* label of the suite's data. High probe
  accuracy after fine-tuning while the output no longer solves the old task = wrapped; probe
  accuracy down to the untrained level = removed;
* **pruning**: the fraction ``prune`` of last-hidden-layer neurons most important to the *new* task
  (first-order Taylor importance ``|mean_x a_n(x) dl_x/da_n(x)|`` on the new task, Molchanov et al., 2017) are
  pruned; if they were the wrapper, the old capability shows again in the output;
* **revival**: ``k`` full-batch Adam steps of re-training on the old task (``revive_steps``); a
  wrapped capability comes back in a few steps, far faster than the same architecture trained
  from scratch for ``k`` steps (``scratch-k`` stages, the reference).

Records: one set (``role``) per stage -- ``model`` (as given), ``pruned``, ``revive-<k>`` and
``scratch-<k>`` -- with ``pred``/``correct`` the model output on the old task and ``extra``
``probe_<layer>`` (the probe's prediction of the old label from that layer's features at that
stage) and ``probe_<layer>_correct``; the probes are refitted per stage on the ``fit`` split.
Compare a suite's pretrained model with its fine-tuned versions in the report section.

Example (suite YAML)::

    data: {name: modular-arithmetic, params: {p: 23, split: test, train_fraction: 0.8}}
    probes:
      - kind: diagnosis
        name: capability-probe
        params:
          fit: {name: modular-arithmetic, params: {p: 23, split: train, train_fraction: 0.8}}
          new: {name: modular-arithmetic, params: {p: 23, shift: 5, split: train, train_fraction: 0.8}}
          prune: 0.1
          revive_steps: [5, 20]
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import diagnoses
from robustlab.core.rng import seeded
from robustlab.diagnose.base import DiagnosisEnv, Scored
from robustlab.diagnose.features import extract
from robustlab.runner.suite import ComponentSpec


def ridge_probe(
    x_fit: torch.Tensor, y_fit: torch.Tensor, x: torch.Tensor, classes: int, alpha: float = 1.0
) -> torch.Tensor:
    """A linear probe: the ridge classifier fitted on ``(x_fit, y_fit)`` (targets +-1 per class,
    intercept, L2 penalty ``alpha``; the same model as scikit-learn's ``RidgeClassifier``),
    returns its predicted classes for ``x``. One batched solve in float64."""
    xf, xe = x_fit.double(), x.double()
    t = -torch.ones(len(y_fit), classes, dtype=torch.float64)
    t[torch.arange(len(y_fit)), y_fit.long()] = 1.0
    mx, mt = xf.mean(0), t.mean(0)
    xc, tc = xf - mx, t - mt
    gram = xc.T @ xc + alpha * torch.eye(xc.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(gram, xc.T @ tc)
    return ((xe - mx) @ w + mt).argmax(1)


def taylor_importance(model: Any, layer: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-neuron first-order Taylor importance ``|mean_x a_n(x) dl_x/da_n(x)|`` of ``layer``'s
    outputs ``a`` for the per-example cross-entropy ``l_x`` on ``(x, y)`` (Molchanov et al., ICLR
    2017): the first-order change of the mean loss when the neuron is removed. One batch."""
    net = model.module
    named = dict(net.named_modules())
    saved: list[torch.Tensor] = []

    def hook(_m: Any, _a: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        saved.append(out)

    h = named[layer].register_forward_hook(hook)
    try:
        loss = F.cross_entropy(model.logits(x), y.long())
        loss.backward()
    finally:
        h.remove()
        net.zero_grad(set_to_none=True)
    a = saved[0]
    assert a.grad is not None
    return (a.detach() * a.grad).sum(0).abs()  # grad of the mean loss: already 1/N per example


@diagnoses.register("capability-probe")
class CapabilityProbe:
    """S45: linear-probe accuracy of an old capability per hidden layer, as given, after pruning
    the neurons most important to the new task, and after ``k`` steps of re-training (revival,
    vs from scratch); tells a removed capability from a wrapped one (Jain et al., 2024)."""

    def __init__(
        self,
        fit: dict[str, Any],
        new: dict[str, Any] | None = None,
        layers: list[str] | None = None,
        prune: float = 0.1,
        revive_steps: list[int] | None = None,
        revive_lr: float = 0.005,
        alpha: float = 1.0,
    ) -> None:
        self.fit = fit
        self.new = new
        self.layers = layers
        self.prune = prune
        self.revive_steps = [5, 20] if revive_steps is None else revive_steps
        self.revive_lr = revive_lr
        self.alpha = alpha

    def datasets(self) -> dict[str, ComponentSpec]:
        out = {"fit": self.fit} | ({"new": self.new} if self.new is not None else {})
        for role, spec in out.items():
            if not isinstance(spec, dict) or "name" not in spec:
                raise ConfigError(f"capability-probe: {role} must be a dataset spec "
                                  f"{{name, params}}, got {spec!r}")  # fmt: skip
        if not 0 <= self.prune < 1:
            raise ConfigError(f"capability-probe: prune is a fraction in [0, 1), got {self.prune}")
        if any(not isinstance(k, int) or k < 1 for k in self.revive_steps):
            raise ConfigError(f"capability-probe: revive_steps must be positive integers, got "
                              f"{self.revive_steps}")  # fmt: skip
        return {role: ComponentSpec(**spec) for role, spec in out.items()}

    def check_model(self, model: Any) -> None:
        self._layers(model)

    def _layers(self, model: Any) -> list[str]:
        from robustlab.diagnose.features import check_layers
        from robustlab.models.modular import ModularMLP, hidden_layers

        if not isinstance(getattr(model, "module", None), ModularMLP):
            raise CapabilityError(
                "capability-probe: needs a modular-mlp (its hidden layers are probed and pruned, "
                f"and it is re-trained), got {type(getattr(model, 'module', model)).__name__}"
            )
        layers = self.layers or hidden_layers(model.module)
        check_layers(model, layers, "capability-probe")
        return layers

    def run(self, model: Any, data: Any, level: float, env: DiagnosisEnv) -> list[Scored]:
        from robustlab.models.modular import ModularMLP, hidden_layers, prune, retrain

        layers = self._layers(model)
        fit = env.data(self.fit)
        classes = model.num_classes
        stages: list[tuple[str, Any]] = [("model", model)]
        if self.new is not None and self.prune > 0:
            new = env.data(self.new)
            last = hidden_layers(model.module)[-1]
            imp = taylor_importance(model, last, new.x, torch.as_tensor(new.y))
            k = int(round(self.prune * len(imp)))
            top = torch.sort(imp, descending=True, stable=True).indices[:k]
            stages.append(("pruned", prune(model, top, last)))
        m = model.module
        for k in self.revive_steps:
            stages.append((f"revive-{k}", retrain(model, fit, k, self.revive_lr, env.seed)))
            with seeded(env.seed):
                fresh = ModularMLP(m.p, m.net.inp.out_features, classes, len(hidden_layers(m)),
                                   "quadratic" if not isinstance(m.net.act1, torch.nn.ReLU)
                                   else "relu")  # fmt: skip
            base = copy.copy(model)
            base.module = fresh
            stages.append((f"scratch-{k}", retrain(base, fit, k, self.revive_lr, env.seed)))
        y = torch.as_tensor(data.y)
        y_fit = torch.as_tensor(fit.y)
        out = []
        for role, clf in stages:
            if clf is model:  # the suite's model: features shared with the run's other diagnoses
                f_fit, f = (
                    env.features(model, fit, tuple(layers)),
                    env.features(model, data, tuple(layers)),
                )
            else:
                f_fit, f = extract(clf, fit.x, layers), extract(clf, data.x, layers)
            pred = f["logits"].argmax(1)
            extra: dict[str, list[Any]] = {}
            for layer in layers:
                probe = ridge_probe(f_fit[layer], y_fit, f[layer], classes, self.alpha)
                extra[f"probe_{layer}"] = probe.tolist()
                extra[f"probe_{layer}_correct"] = (probe == y).tolist()
            out.append(Scored(data, pred, (pred == y).float(), extra, role=role))
        return out
