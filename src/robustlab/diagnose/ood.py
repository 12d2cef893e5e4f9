"""Failure and out-of-distribution (OOD) detection (S30, "safe & reliable" systems).

The registered diagnosis ``ood`` scores every example of the suite's data (role ``"test"``, the
in-distribution (ID) set, ``correct`` = whether the model's prediction is right) and, when an
``ood`` dataset is named, every example of that set (role ``"ood"``, ``correct`` = null) with
several detectors. **Convention: every score is higher = more in-distribution / more likely
correct.** Records hold one column per detector, ``extra["score_<detector>"]``; the report section
(:mod:`robustlab.report.sections.detection`) turns them into failure-detection metrics (ID set:
correct vs wrong) and OOD-detection metrics (ID vs OOD) with :mod:`robustlab.metrics.detection`.

Detectors (``z`` logits, ``f`` the features of ``layer``, penultimate by default):

* ``msp``: ``max_c softmax(z)_c`` (Hendrycks & Gimpel 2017);
* ``maxlogit``: ``max_c z_c`` (Hendrycks et al. 2022, "Scaling OOD detection");
* ``energy``: ``T logsumexp(z / T)``, the negative free energy (Liu et al. 2020), ``temperature`` T;
* ``mahalanobis``: ``-min_c (f - mu_c)^T Sigma^+ (f - mu_c)`` with class means ``mu_c`` and one
  shared covariance ``Sigma = 1/N sum_c sum_{i in c} (f_i - mu_c)(f_i - mu_c)^T`` fitted on the
  fitting set's features with its true labels; ``Sigma^+`` the pseudo-inverse (``pinvh``, as Lee
  et al.'s code via scikit-learn's ``EmpiricalCovariance``), without their feature ensemble and, by
  default, without their input preprocessing (``mahalanobis_eps`` > 0: score ``x' = x - eps
  sign(grad_x d_closest(x))``, one more forward+backward and forward pass) (Lee et al. 2018, "A
  Simple Unified Framework for Detecting OOD Samples and Adversarial Attacks");
* ``knn``: ``-||f/|f| - b_(k)||``: minus the distance of the L2-normalised feature to its
  ``k``-th nearest normalised fitting feature (Sun et al. 2022, "OOD Detection with Deep Nearest
  Neighbors"), exact brute force in chunks of matrix products;
* ``odin``: ``max_c softmax(z(x') / T)_c`` with ``x' = x - eps sign(grad_x CE(z(x)/T, argmax))``
  (Liang et al. 2018, "Enhancing the Reliability of OOD Image Detection"; ``odin_temperature``
  T = 1000, ``odin_eps`` = 0.0014 by default; inputs are not clipped, as in the paper).

Cost: the logit and feature detectors read :meth:`DiagnosisEnv.features` (one cached forward pass
over the data, one over the OOD set, one over the fitting set, shared with every other diagnosis
of the run that asks for the same layers); ODIN adds, by nature, a forward+backward pass and a
second forward pass over the data and the OOD set.

Fitting data (``fit``, for mahalanobis and knn): ``{name, params}`` of a dataset; default: the
scored data's own dataset with ``split: "train"`` (e.g. digits test -> digits train), when its
factory has a ``split`` parameter and the scored split is not already ``train``; otherwise name
``fit`` (a run-time ConfigError says so).

Example suite probe::

    - kind: diagnosis
      name: ood
      params:
        detectors: [msp, energy, mahalanobis, knn]
        ood: {name: fashion-mnist, params: {split: test, limit: 360, size: 8}}
        k: 20
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np
import torch

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import diagnoses
from robustlab.core.types import NonNegative, Positive, PositiveInt
from robustlab.data.base import Dataset
from robustlab.diagnose.base import DiagnosisEnv, Scored
from robustlab.diagnose.features import check_layers, module_of

LOGIT_DETECTORS = ("msp", "maxlogit", "energy")
FEATURE_DETECTORS = ("mahalanobis", "knn")  # need features of a layer and fitting data
GRADIENT_DETECTORS = ("odin",)  # need input gradients
DETECTORS = LOGIT_DETECTORS + FEATURE_DETECTORS + GRADIENT_DETECTORS


# --- scores: batched, higher = more in-distribution ---------------------------------------------


def msp_score(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability (Hendrycks & Gimpel 2017)."""
    return torch.softmax(logits.double(), 1).amax(1)


def maxlogit_score(logits: torch.Tensor) -> torch.Tensor:
    """Maximum logit (Hendrycks et al. 2022)."""
    return logits.double().amax(1)


def energy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Negative free energy ``T logsumexp(z / T)`` (Liu et al. 2020)."""
    return temperature * torch.logsumexp(logits.double() / temperature, 1)


def fit_gaussians(feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means ``[C', D]`` (classes present in ``labels``, in order) and the pseudo-inverse of
    the shared covariance ``[D, D]`` (float64), as in Lee et al. 2018."""
    f = feats.double()
    classes, inv = torch.unique(labels.long(), return_inverse=True)
    counts = torch.bincount(inv, minlength=len(classes)).double()
    means = torch.zeros(len(classes), f.shape[1], dtype=torch.float64).index_add_(0, inv, f)
    means /= counts[:, None]
    centred = f - means[inv]
    cov = centred.T @ centred / len(f)
    precision = torch.linalg.pinv(cov, hermitian=True)
    return means, precision


def mahalanobis_score(
    feats: torch.Tensor, means: torch.Tensor, precision: torch.Tensor, chunk: int = 4096
) -> torch.Tensor:
    """``-min_c (f - mu_c)^T P (f - mu_c)`` for every row of ``feats``, as matrix products."""
    out = []
    mp = means @ precision  # [C, D]
    m_term = (mp * means).sum(1)  # [C]
    for i in range(0, len(feats), chunk):
        f = feats[i : i + chunk].double()
        fp = f @ precision
        d = (fp * f).sum(1, keepdim=True) - 2 * f @ mp.T + m_term[None]
        out.append(-d.amin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def mahalanobis_preprocessed_score(
    model: Any,
    x: torch.Tensor,
    layer: str,
    means: torch.Tensor,
    precision: torch.Tensor,
    eps: float,
    chunk: int = 512,
) -> torch.Tensor:
    """Mahalanobis with Lee et al.'s input preprocessing: the score of ``x' = x - eps
    sign(grad_x d_c(x))``, ``d_c`` the distance of ``x``'s ``layer`` features to the closest class
    mean (the step that moves the input towards it); one forward+backward and one forward pass."""
    from robustlab.diagnose.features import capture, extract

    out = []
    for i in range(0, len(x), chunk):
        xb = x[i : i + chunk].detach().clone().requires_grad_(True)
        with torch.enable_grad(), capture(model, [layer], detach=False) as cap:
            model.logits(xb)
            f = cap[layer][0].double()
            d = (f @ precision * f).sum(1, keepdim=True) - 2 * f @ (means @ precision).T
            d = d + ((means @ precision) * means).sum(1)[None]
            (grad,) = torch.autograd.grad(d.amin(1).sum(), xb)
        x_hat = xb.detach() - eps * grad.sign()
        out.append(mahalanobis_score(extract(model, x_hat, (layer,))[layer], means, precision))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def normalise(feats: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    f = feats.double()
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)


def knn_score(
    feats: torch.Tensor, bank: torch.Tensor, k: int, chunk: int = 1024, exclude_self: bool = False
) -> torch.Tensor:
    """``-`` the distance of each normalised row of ``feats`` to its ``k``-th nearest row of the
    normalised ``bank`` (Sun et al. 2022), brute force in chunks: ``|a - b|^2 = 2 - 2 a.b``."""
    q = normalise(feats)
    b = normalise(bank)
    if k > len(b):
        raise ConfigError(f"ood: knn k = {k} exceeds the {len(b)} fitting examples")
    out = []
    m = len(b)
    for i in range(0, len(q), chunk):
        sim = (q[i : i + chunk] @ b.T).numpy()
        # the k-th largest similarity: a partial partition (3x faster than torch.topk here)
        kth = torch.from_numpy(np.partition(sim, m - k, axis=1)[:, m - k])
        out.append(-torch.sqrt((2 - 2 * kth).clamp_min(0)))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def odin_score(
    model: Any, x: torch.Tensor, temperature: float = 1000.0, eps: float = 0.0014, chunk: int = 512
) -> torch.Tensor:
    """ODIN (Liang et al. 2018): the temperature-scaled MSP of the input moved by ``eps`` against
    the sign of the gradient of the cross-entropy of its predicted class."""
    out = []
    for i in range(0, len(x), chunk):
        xb = x[i : i + chunk].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            z = model.logits(xb) / temperature
            loss = torch.nn.functional.cross_entropy(z, z.argmax(1))
            (grad,) = torch.autograd.grad(loss, xb)
        with torch.no_grad():
            x_hat = xb.detach() - eps * grad.sign()
            out.append(torch.softmax(model.logits(x_hat).double() / temperature, 1).amax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


# --- the diagnosis -------------------------------------------------------------------------------


@diagnoses.register("ood")
class OODDetection:
    """Failure and OOD detection scores per example (see the module docstring for the detectors,
    the score convention and the default fitting data).

    ``detectors``: names from ``msp, maxlogit, energy, mahalanobis, knn, odin`` (default: all the
    model supports: the logit ones for a black-box model); ``ood``: ``{name, params}`` of the OOD
    set (optional: without it only failure detection); ``fit``: ``{name, params}`` of the fitting
    set of mahalanobis and knn; ``layer``: their features; ``temperature``: energy's T; ``k``:
    knn's neighbour; ``odin_temperature``, ``odin_eps``: ODIN's T and step; ``mahalanobis_eps``:
    Lee et al.'s input preprocessing step (0: none).
    """

    def __init__(
        self,
        detectors: list[str] | None = None,
        ood: dict[str, Any] | None = None,
        fit: dict[str, Any] | None = None,
        layer: str = "penultimate",
        temperature: Positive = 1.0,
        k: PositiveInt = 50,
        odin_temperature: Positive = 1000.0,
        odin_eps: NonNegative = 0.0014,
        mahalanobis_eps: NonNegative = 0.0,
    ) -> None:
        for name in detectors or []:
            if name not in DETECTORS:
                close = difflib.get_close_matches(str(name), DETECTORS, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"ood: unknown detector {name!r}{hint} (detectors: {', '.join(DETECTORS)})"
                )
        if detectors is not None and not detectors:
            raise ConfigError(f"ood: detectors is empty; name some of {', '.join(DETECTORS)}")
        self.detectors = detectors
        self.ood = ood
        self.fit = fit
        self.layer = layer
        self.temperature = temperature
        self.k = k
        self.odin_temperature = odin_temperature
        self.odin_eps = odin_eps
        self.mahalanobis_eps = mahalanobis_eps

    # hooks called before a run ------------------------------------------------------------------

    def datasets(self) -> dict[str, Any]:
        return {role: spec for role, spec in (("ood", self.ood), ("fit", self.fit)) if spec}

    def check_data(self, data: Dataset, others: dict[str, Dataset]) -> None:
        shape = _shape(data)
        for role, other in others.items():
            if _shape(other) != shape:
                raise ConfigError(
                    f"ood: the {role} set {other.name!r} has inputs of shape {_shape(other)}, the "
                    f"scored data {data.name!r} {shape}: resize it to the model's input (e.g. "
                    f"fashion-mnist's size: {shape[-1] if shape else '?'})"
                )
        fit = others.get("fit")
        if fit is not None and not isinstance(fit.y, torch.Tensor):
            raise ConfigError(f"ood: the fit set {fit.name!r} has no class labels")
        if fit is not None and self.k > len(fit) and "knn" in (self.detectors or DETECTORS):
            raise ConfigError(f"ood: knn k = {self.k} exceeds the {len(fit)} fitting examples")

    def check_model(self, model: Any) -> None:
        self.chosen(model)

    def chosen(self, model: Any) -> list[str]:
        """The detectors this model runs; a named one it cannot run is a CapabilityError."""
        white = module_of(model) is not None
        grad = bool(getattr(getattr(model, "capabilities", None), "grad", white))
        if self.detectors is None:
            return [
                d for d in DETECTORS if d in LOGIT_DETECTORS or (white and (d != "odin" or grad))
            ]
        need = [d for d in self.detectors if d not in LOGIT_DETECTORS]
        if need and not white:
            raise CapabilityError(
                f"ood: detectors {need} need the model's features or gradients; "
                f"{type(model).__name__} is black-box: use {', '.join(LOGIT_DETECTORS)}"
            )
        if "odin" in self.detectors and not grad:
            raise CapabilityError("ood: odin needs input gradients, which this model lacks")
        if "mahalanobis" in self.detectors and self.mahalanobis_eps > 0 and not grad:
            raise CapabilityError(
                "ood: mahalanobis_eps > 0 (input preprocessing) needs input gradients, which "
                "this model lacks; use mahalanobis_eps: 0"
            )
        if any(d in FEATURE_DETECTORS for d in self.detectors):
            check_layers(model, [self.layer], "ood")
        return list(dict.fromkeys(self.detectors))

    def fit_spec(self, env: DiagnosisEnv) -> dict[str, Any]:
        """The fitting set: ``fit``, else the scored dataset's train split (see the module doc)."""
        return self.fit or env.train_split("ood (mahalanobis, knn)")

    # the run ------------------------------------------------------------------------------------

    def run(self, model: Any, data: Dataset, level: float, env: DiagnosisEnv) -> list[Scored]:
        dets = self.chosen(model)
        feat = any(d in FEATURE_DETECTORS for d in dets)
        layers = (self.layer,) if feat else ()
        sets = [("test", data)]
        if self.ood:
            sets.append(("ood", env.data(self.ood)))
        others = dict(sets[1:])
        fit_feats = None
        if feat:
            fit = env.data(self.fit_spec(env))
            others["fit"] = fit
            fit_feats = env.features(model, fit, layers)
        self.check_data(data, others)
        bank = gauss = None
        if fit_feats is not None:  # fitting examples with non-finite outputs are left out
            keep = _finite(fit_feats["logits"]) & _finite(fit_feats[self.layer])
            if not keep.any():
                raise ConfigError(
                    f"ood: every example of the fit set {others['fit'].name!r} has non-finite "
                    f"logits or {self.layer!r} features (NaN or inf): nothing to fit on"
                )
            bank = fit_feats[self.layer][keep]
            if "mahalanobis" in dets:
                gauss = fit_gaussians(bank, others["fit"].y[keep])
        out = []
        for role, d in sets:
            f = env.features(model, d, layers)
            logits = f["logits"]
            ok = _finite(logits) & _finite(f[self.layer]) if feat else _finite(logits)
            scores: dict[str, torch.Tensor] = {}
            for det in dets:
                if det == "msp":
                    scores[det] = msp_score(logits)
                elif det == "maxlogit":
                    scores[det] = maxlogit_score(logits)
                elif det == "energy":
                    scores[det] = energy_score(logits, self.temperature)
                elif det == "mahalanobis" and self.mahalanobis_eps > 0:
                    assert gauss is not None
                    scores[det] = mahalanobis_preprocessed_score(
                        model, d.x, self.layer, *gauss, self.mahalanobis_eps
                    )
                    ok &= _finite(scores[det])
                elif det == "mahalanobis":
                    assert gauss is not None
                    scores[det] = mahalanobis_score(f[self.layer].nan_to_num(), *gauss)
                elif det == "knn":
                    assert bank is not None
                    scores[det] = knn_score(f[self.layer].nan_to_num(), bank, self.k)
                else:
                    scores[det] = odin_score(model, d.x, self.odin_temperature, self.odin_eps)
                    ok &= _finite(scores[det])
            pred = logits.argmax(1)
            if role == "test":
                if not isinstance(d.y, torch.Tensor):
                    raise ConfigError(f"ood: data {d.name!r} has no class labels")
                correct = (pred == d.y.to(pred.device)).float()
            else:
                correct = torch.full((len(d),), float("nan"))
            # examples with non-finite outputs: error records, no scores, left out of the metrics
            correct[~ok] = float("nan")
            extra = {
                f"score_{k}": v.masked_fill(~ok, float("nan")).tolist() for k, v in scores.items()
            }
            preds: list[Any] | torch.Tensor = pred
            error = None
            if not ok.all():
                preds = [
                    p if good else None for p, good in zip(pred.tolist(), ok.tolist(), strict=True)
                ]
                msg = f"ood: non-finite model outputs (NaN or inf) on this {role} example"
                error = [None if good else msg for good in ok.tolist()]
            out.append(Scored(d, preds, correct, extra, role=role, error=error))
        return out


def _finite(t: torch.Tensor) -> torch.Tensor:
    """Per row: whether every value is finite."""
    return torch.isfinite(t).all(1) if t.dim() > 1 else torch.isfinite(t)


def _shape(d: Dataset) -> tuple[int, ...] | None:
    return tuple(d.x.shape[1:]) if isinstance(d.x, torch.Tensor) else None
