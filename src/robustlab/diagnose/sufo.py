"""SUFO (S41): Supervised probing, Unsupervised similarity, Feature dynamics, Outliers.

Kim, Ye, ... & Poon (2023), "SUFO: A Framework for Interpreting Fine-Tuned Transformer Feature
Spaces" (interpretability of fine-tuned feature spaces), applied to any torch classifier's layers:

* **Supervised probing**: a multinomial logistic-regression probe per layer, fit on a fitting set
  (``fit``, a dataset spec; default: 2-fold cross-fitting on the data itself, so no example is
  scored by a probe fit on it) and scored per example: ``extra["probe:<layer>"]`` is the probe's
  predicted class; the probe accuracy per layer is the share equal to the label. The probe is
  fit on standardised features (mean/std of the fitting set) by full-batch L-BFGS on the mean
  cross-entropy plus ``||W||^2 / (2 C n)`` (bias unpenalised): scikit-learn's
  ``LogisticRegression(C=C)`` objective divided by ``n``, hence the same minimiser
  (tests compare with it).
* **Unsupervised similarity**: linear CKA (Kornblith et al. 2019) and RSA (Kriegeskorte et al.
  2008) between every pair of layers, and between the model's layers and every default layer of
  a ``compare`` model (:mod:`robustlab.metrics.representation`), on the first ``max_examples``
  examples.
* **Feature dynamics**: CKA (and RSA) of each layer at earlier training epochs to the same layer
  of the final model. The training loop keeps no per-epoch weights once a model has finished
  (``training/checkpoint.py`` deletes its checkpoint), so for a ``trained`` model the
  ``checkpoints`` (epochs) are the same spec trained for that many epochs: with the constant
  schedule every epoch's randomness derives from ``(seed, epoch)``, so these are exactly the
  weights the longer run had after that epoch (epoch 0: the untrained base).
* **Outliers**: per layer, dimensions whose mean absolute activation exceeds the layer's mean by
  ``outlier_sigma`` standard deviations (the "outlier dimensions" of Kovaleva et al. 2021 that
  SUFO tracks), their share of the activation mass, and the share of exactly-zero activations
  (the sparsification SUFO reports after fine-tuning).

Records: role ``test``, one per example (pred/correct: the model's; ``probe:<layer>`` per layer);
role ``layer``, one per layer (example_id = layer position; extra: layer, dim, n_outliers,
outlier_dims, outlier_share, zero_share); role ``pair``, one per pair (example_id = pair index;
extra: group ``layers`` / ``compare`` / ``epoch``, model_a, layer_a, model_b, layer_b, epoch, cka,
rsa). Unknown layer names are a :class:`~robustlab.core.errors.ConfigError` listing the layers.

Example (YAML)::

    probes:
      - kind: diagnosis
        name: sufo
        params: {fit: {name: digits, params: {split: train}}, compare: {name: digits-mlp},
                 checkpoints: [0, 1, 2]}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustlab.core.errors import ConfigError
from robustlab.core.registry import diagnoses
from robustlab.core.types import Positive, PositiveInt
from robustlab.data.base import Dataset
from robustlab.diagnose.base import DiagnosisEnv, Scored, require_finite
from robustlab.diagnose.features import check_layers, module_of
from robustlab.metrics.representation import cka_matrix, rsa_matrix

_SKIP = (nn.Flatten, nn.Dropout, nn.Identity)


def default_layers(model: Any) -> list[str]:
    """``input`` and every leaf module of the model except Flatten, Dropout and Identity (whose
    output repeats their input), in module order."""
    m = module_of(model)
    if m is None:
        return ["logits"]
    return ["input"] + [
        n for n, sub in m.named_modules()
        if n and not any(True for _ in sub.children()) and not isinstance(sub, _SKIP)
    ]  # fmt: skip


def fit_probe(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, c: float = 1.0, steps: int = 100
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A multinomial logistic-regression probe on ``x [n, d]``: ``(mean, std, W [d, C], b [C])``
    minimising ``mean CE + ||W||^2 / (2 c n)`` over standardised features by L-BFGS (float64)."""
    x = x.double()
    mean, std = x.mean(0), x.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    z = (x - mean) / std
    n, d = z.shape
    w = torch.zeros(d, n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=steps, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")  # fmt: skip
    yl = y.long()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(z @ w + b, yl) + (w * w).sum() / (2 * c * n)
        loss.backward()
        return loss

    opt.step(closure)
    return mean, std, w.detach(), b.detach()


def probe_predict(
    probe: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Predicted classes of a probe from :func:`fit_probe` on ``x``."""
    mean, std, w, b = probe
    return (((x.double() - mean) / std) @ w + b).argmax(1)


def outliers(a: torch.Tensor, sigma: float) -> dict[str, Any]:
    """Outlier dimensions of activations ``a [n, d]`` (mean |a| above the layer's mean by
    ``sigma`` standard deviations), their share of the L1 activation mass, the zero share."""
    mag = a.abs().double().mean(0)
    thr = mag.mean() + sigma * mag.std(unbiased=False)
    dims = (mag > thr).nonzero().flatten()
    total = float(mag.sum())
    return {
        "n_outliers": len(dims),
        "outlier_dims": dims[mag[dims].argsort(descending=True)][:20].tolist(),
        "outlier_share": float(mag[dims].sum()) / total if total > 0 else 0.0,
        "zero_share": float((a == 0).double().mean()),
    }


def _rows(n: int, name: str) -> Dataset:
    """A dataset of ``n`` placeholder rows for records that are not examples (layers, pairs)."""
    return Dataset(torch.zeros(n, 1), torch.full((n,), -1), name)


@diagnoses.register("sufo")
class Sufo:
    """SUFO: layer-wise linear probes, CKA/RSA between layers and models, feature dynamics over
    training epochs, outlier dimensions (see the module docstring)."""

    def __init__(
        self,
        layers: list[str] | None = None,
        fit: dict[str, Any] | None = None,
        compare: dict[str, Any] | None = None,
        checkpoints: list[int] | None = None,
        max_examples: PositiveInt = 1000,
        C: Positive = 1.0,
        probe_steps: PositiveInt = 100,
        outlier_sigma: Positive = 3.0,
    ) -> None:
        self.layers = layers
        self.fit = fit
        self.compare = compare
        self.checkpoints = checkpoints
        self.max_examples = max_examples
        self.C = C
        self.probe_steps = probe_steps
        self.outlier_sigma = outlier_sigma

    def datasets(self) -> dict[str, Any]:
        return {} if self.fit is None else {"fit": self.fit}

    def check_data(self, data: Dataset, others: dict[str, Dataset]) -> None:
        if not isinstance(data.y, torch.Tensor):
            raise ConfigError(f"sufo: data {data.name!r} has no class labels to probe")
        fit = others.get("fit")
        if (
            fit is not None
            and isinstance(data.x, torch.Tensor)
            and isinstance(fit.x, torch.Tensor)
            and tuple(fit.x.shape[1:]) != tuple(data.x.shape[1:])
        ):
            raise ConfigError(
                f"sufo: fitting data {fit.name!r} has inputs {tuple(fit.x.shape[1:])}, the "
                f"data {data.name!r} {tuple(data.x.shape[1:])}"
            )

    def check_model(self, model: Any) -> None:
        check_layers(model, self._layers(model), "sufo")
        if self.checkpoints is not None and any(e < 0 for e in self.checkpoints):
            raise ConfigError(f"sufo: checkpoints are epochs >= 0, got {self.checkpoints}")
        if self.checkpoints and getattr(model, "provenance", None) is None:
            raise ConfigError(
                "sufo: checkpoints (feature dynamics over epochs) need a 'trained' model; "
                f"{type(model).__name__} {getattr(model, 'name', '')!r} was not trained by it"
            )
        if self.compare is not None:
            from robustlab.core.registry import models
            from robustlab.runner.suite import ModelSpec

            try:
                spec = ModelSpec(**self.compare)
            except Exception as e:  # pydantic's message, one line
                msg = " ".join(str(e).split())[:300]
                raise ConfigError(f"sufo compare: model spec {self.compare!r}: {msg}") from None
            models.get(spec.name)  # an unknown name raises with a suggestion

    def _layers(self, model: Any) -> list[str]:
        if self.layers is not None and not self.layers:
            raise ConfigError("sufo: layers is empty; leave it out for every layer")
        return list(self.layers) if self.layers is not None else default_layers(model)

    def run(self, model: Any, data: Dataset, level: float, env: DiagnosisEnv) -> list[Scored]:
        self.check_model(model)
        layers = self._layers(model)
        feats = env.features(model, data, tuple(layers))
        for name in layers:
            require_finite(f"sufo layer {name!r}", feats[name])
        assert isinstance(data.y, torch.Tensor)
        y = data.y.long()
        n_classes = len(data.classes) if data.classes else int(y.max()) + 1
        extra = self._probes(model, data, layers, feats, y, n_classes, env)
        pred = feats["logits"].argmax(1)
        sets = [Scored(data, pred, (pred == y).float(), extra)]
        # layers: outliers and sparsity
        stats = [outliers(feats[name], self.outlier_sigma) for name in layers]
        lrows = {k: [s[k] for s in stats] for k in stats[0]}
        lrows["layer"] = list(layers)
        lrows["dim"] = [int(feats[name].shape[1]) for name in layers]
        sets.append(Scored(_rows(len(layers), "sufo-layers"), [None] * len(layers),
                           torch.full((len(layers),), float("nan")), lrows, role="layer"))  # fmt: skip
        pairs = self._pairs(model, data, layers, feats, env)
        if pairs["cka"]:
            n = len(pairs["cka"])
            sets.append(Scored(_rows(n, "sufo-pairs"), [None] * n,
                               torch.full((n,), float("nan")), pairs, role="pair"))  # fmt: skip
        return sets

    def _probes(
        self, model: Any, data: Dataset, layers: list[str], feats: dict[str, torch.Tensor],
        y: torch.Tensor, n_classes: int, env: DiagnosisEnv,
    ) -> dict[str, list[Any]]:  # fmt: skip
        out: dict[str, list[Any]] = {}
        if self.fit is not None:
            fit = env.data(self.fit)
            if not isinstance(fit.y, torch.Tensor):
                raise ConfigError(f"sufo: fitting data {fit.name!r} has no class labels")
            ff = env.features(model, fit, tuple(layers))
            for name in layers:
                probe = fit_probe(ff[name], fit.y, n_classes, self.C, self.probe_steps)
                out[f"probe:{name}"] = probe_predict(probe, feats[name]).tolist()
            return out
        if len(y) < 4:
            raise ConfigError(f"sufo: cross-fitted probes need at least 4 examples, got {len(y)}")
        fold = torch.arange(len(y)) % 2  # 2-fold cross-fitting: each half scored by the other's
        for name in layers:
            p = torch.empty(len(y), dtype=torch.long)
            for f in (0, 1):
                probe = fit_probe(feats[name][fold != f], y[fold != f], n_classes, self.C,
                                  self.probe_steps)  # fmt: skip
                p[fold == f] = probe_predict(probe, feats[name][fold == f])
            out[f"probe:{name}"] = p.tolist()
        return out

    def _pairs(
        self, model: Any, data: Dataset, layers: list[str], feats: dict[str, torch.Tensor],
        env: DiagnosisEnv,
    ) -> dict[str, list[Any]]:  # fmt: skip
        m = self.max_examples
        mine = [feats[name][:m] for name in layers]
        me = env.unit.model.display
        cols: dict[str, list[Any]] = {k: [] for k in
                                      ("group", "model_a", "layer_a", "model_b", "layer_b", "epoch", "cka", "rsa")}  # fmt: skip

        def add(group: str, ma: str, la: list[str], mb: str, lb: list[str], cka: torch.Tensor,
                rsa: torch.Tensor, pairs: list[tuple[int, int]], epoch: int | None = None) -> None:  # fmt: skip
            for i, j in pairs:
                for k, v in (("group", group), ("model_a", ma), ("layer_a", la[i]), ("model_b", mb),
                             ("layer_b", lb[j]), ("epoch", epoch), ("cka", float(cka[i, j])),
                             ("rsa", float(rsa[i, j]))):  # fmt: skip
                    cols[k].append(v)

        n_l = len(layers)
        add("layers", me, layers, me, layers, cka_matrix(mine), rsa_matrix(mine),
            [(i, j) for i in range(n_l) for j in range(i + 1, n_l)])  # fmt: skip
        if self.compare is not None:
            other, label = self._other(env, self.compare)
            olayers = default_layers(other)
            of = env.features(other, data, tuple(olayers))
            theirs = [of[name][:m] for name in olayers]
            add("compare", me, layers, label, olayers, cka_matrix(mine, theirs),
                rsa_matrix(mine, theirs), [(i, j) for i in range(n_l) for j in range(len(olayers))])  # fmt: skip
        for epoch in self.checkpoints or []:
            other, label = self._checkpoint(env, epoch)
            of = env.features(other, data, tuple(layers))
            theirs = [of[name][:m] for name in layers]
            add("epoch", label, layers, me, layers, cka_matrix(theirs, mine),
                rsa_matrix(theirs, mine), [(i, i) for i in range(n_l)], epoch)  # fmt: skip
        return cols

    def _other(self, env: DiagnosisEnv, spec: dict[str, Any]) -> tuple[Any, str]:
        from robustlab.runner.suite import ModelSpec

        try:
            ms = ModelSpec(**spec)
        except Exception as e:  # pydantic's message, one line
            raise ConfigError(
                f"sufo compare: model spec {spec!r}: {' '.join(str(e).split())}"
            ) from None
        return env.ctx.model(ms, env.unit.replicate), ms.display

    def _checkpoint(self, env: DiagnosisEnv, epoch: int) -> tuple[Any, str]:
        from robustlab.runner.suite import ModelSpec

        spec = env.unit.model
        if spec.name != "trained":
            raise ConfigError(
                f"sufo: checkpoints (feature dynamics over epochs) need a 'trained' model, "
                f"got {spec.name!r}"
            )
        params = dict(spec.params)
        if epoch == 0:  # the untrained base
            base = params["base"]
            return env.ctx.model(ModelSpec(name=base["name"], params=base.get("params") or {}),
                                 env.unit.replicate), "epoch 0"  # fmt: skip
        if epoch > int(params.get("epochs", 10)):
            raise ConfigError(
                f"sufo: checkpoint epoch {epoch} is beyond the model's {params.get('epochs', 10)} epochs"
            )
        params["epochs"] = epoch
        return env.ctx.model(
            ModelSpec(name="trained", params=params), env.unit.replicate
        ), f"epoch {epoch}"
