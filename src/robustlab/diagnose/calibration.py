"""Calibration diagnosis (S30: uncertainty quantification; Guo et al., "On Calibration of Modern
Neural Networks", ICML 2017; calibration under shift: Ovadia et al., "Can You Trust Your Model's
Uncertainty?", NeurIPS 2019).

Per scored example it records the model's **confidence** (max softmax), **NLL** and **Brier**
contribution (summed over classes), the same three after **temperature scaling**, the temperature
``T`` and how it was fitted; correctness is the record's ``correct``. ECE (equal-width and
equal-mass bins), MCE, Brier, NLL, reliability diagrams, risk-coverage curves and AURC are then
computed from these records by the report section (:mod:`robustlab.report.sections.calibration`,
formulas in :mod:`robustlab.metrics.calibration`).

Parameters:

* ``bins`` (default 15, Guo et al.'s choice): the number of bins of both binnings in the report;
* ``shift``: ``{name, params}`` of a registered perturbation; the probe's levels are its
  severities (its level domain), level 0 is the clean data. The perturbation is applied at the
  unit's level with the unit's per-example random numbers, like a ``perturbation`` probe.
  Without ``shift`` the only level is 0;
* ``fit``: ``{name, params}`` of a dataset the temperature is fitted on (clean, held out). When it
  is the scored data's source, the scored example ids are left out of it (validation refuses a
  fitting set that lies inside the scored data). Default (no ``fit``): **2-fold cross-fitting** on
  the clean scored data: the examples in order of id alternate between ``folds`` folds and each
  fold's temperature is fitted on the other folds, so no example's own label ever enters its
  temperature. Under shift, ``T`` is always fitted on clean data (the usual protocol: a
  temperature from clean validation data, tested on shifted data).

Clean logits come from :meth:`~robustlab.diagnose.base.DiagnosisEnv.features` (the run's cached
forward pass); shifted inputs are one more batched pass.

Suite example::

    probes:
      - kind: diagnosis
        name: calibration
        params: {bins: 15, shift: {name: gaussian_noise}}
        levels: [0, 1, 2, 3, 4, 5]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import torch
from pydantic import AfterValidator, Field

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.levels import Levels
from robustlab.core.registry import diagnoses
from robustlab.diagnose.base import Scored
from robustlab.metrics import calibration as cal

if TYPE_CHECKING:
    from robustlab.data.base import Dataset
    from robustlab.diagnose.base import DiagnosisEnv


def _spec_check(kind: str) -> Any:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        from robustlab.core.registry import REGISTRIES, check_params

        if not isinstance(value, dict) or "name" not in value or set(value) - {"name", "params"}:
            raise ValueError(f"a mapping {{name: <registered {kind[:-1]}>, params: {{...}}}}")
        name, params = value["name"], value.get("params") or {}
        if not isinstance(name, str) or not isinstance(params, dict):
            raise ValueError("name must be a string and params a mapping")
        try:
            check_params(REGISTRIES[kind].get(name), dict(params), f"{kind[:-1]} {name!r}")
        except ConfigError as e:  # shown as "must be a valid ... spec (why)", without the list
            raise ValueError(f"a valid {kind[:-1]} spec ({str(e).split(' (known: ')[0]})") from None
        return value

    return Annotated[dict[str, Any], AfterValidator(check)]


ShiftSpec = _spec_check("perturbations")
DataSpec = _spec_check("datasets")


@diagnoses.register("calibration")
class Calibration:
    """Confidence, NLL and Brier per example, before and after temperature scaling, optionally
    under a shift at the probe's severities (see the module doc)."""

    def __init__(
        self,
        bins: Annotated[int, Field(ge=1)] = 15,
        shift: ShiftSpec | None = None,  # type: ignore[valid-type]
        fit: DataSpec | None = None,  # type: ignore[valid-type]
        folds: Annotated[int, Field(ge=2)] = 2,
    ) -> None:
        self.bins = bins
        self.shift = shift
        self.fit = fit
        self.folds = folds

    @staticmethod
    def level_domain(shift: dict[str, Any] | None = None, **_: Any) -> Levels | None:
        """The shift's severities (its perturbation's level domain); only 0 without a shift."""
        if shift is None:
            return Levels(0, 0, what="level (0 only: no shift given)")
        from robustlab.core.registry import perturbations

        return perturbations.levels(shift["name"], shift.get("params"))

    def datasets(self) -> dict[str, Any]:
        return {"fit": self.fit} if self.fit is not None else {}

    def check_model(self, model: Any) -> None:
        if not callable(getattr(model, "logits", None)):
            raise CapabilityError(
                f"calibration needs a classifier's logits; {type(model).__name__} has none"
            )

    def check_data(self, data: Dataset, others: dict[str, Dataset]) -> None:
        fit = others.get("fit")
        if fit is None:
            if len(data) < 2 * self.folds:
                raise ConfigError(
                    f"calibration: {len(data)} examples are too few for {self.folds}-fold "
                    "cross-fitting of the temperature; give a 'fit' dataset"
                )
            return
        shapes = [tuple(d.x.shape[1:]) for d in (data, fit) if isinstance(d.x, torch.Tensor)]
        if len(shapes) == 2 and shapes[0] != shapes[1]:
            raise ConfigError(
                f"calibration: fit data {fit.name!r} has inputs of shape {shapes[1]}, the scored "
                f"data {data.name!r} {shapes[0]}"
            )
        assert fit.ids is not None and data.ids is not None
        if fit.name == data.name and bool(torch.isin(fit.ids, data.ids).all()):
            raise ConfigError(
                f"calibration: the fit data {fit.name!r} lies inside the scored data: the "
                "temperature must be fitted on held-out examples (name another split)"
            )

    def run(self, model: Any, data: Dataset, level: float, env: DiagnosisEnv) -> list[Scored]:
        y = torch.as_tensor(data.y).long().numpy()
        clean = env.features(model, data, ())["logits"]
        z = clean
        if level != 0:
            if self.shift is None:
                raise ConfigError(f"calibration: level {level} needs a 'shift' perturbation")
            z = self._shifted(model, data, level, env)
        zc, z = clean.double().numpy(), z.double().numpy()
        # examples with non-finite logits get error records (like a task's isolated failures)
        # and are left out of the temperature fit and of every metric
        ok = np.isfinite(z).all(axis=1)
        temps, fold, how, n_fit, bound = self._temperatures(model, data, zc, y, env)
        n = len(y)
        cols = {k: np.full(n, np.nan) for k in ("confidence", "nll", "brier")}
        ts = {k: np.full(n, np.nan) for k in cols}
        pred = np.full(n, -1, dtype=np.int64)
        if ok.any():
            s = cal.scores(z[ok], y[ok])
            t = cal.scores(z[ok] / temps[ok, None], y[ok])
            for k in cols:
                cols[k][ok], ts[k][ok] = s[k], t[k]
            pred[ok] = s["pred"]
        extra = {
            **{k: v.tolist() for k, v in cols.items()},
            **{f"{k}_ts": v.tolist() for k, v in ts.items()},
            "temperature": temps.tolist(),
            "t_at_bound": bound.astype(int).tolist(),
            "fold": fold.tolist(),
            "fit": [how] * n,
            "fit_examples": n_fit.tolist(),
        }
        correct = torch.from_numpy(np.where(ok, pred == y, np.nan)).float()
        preds = [
            int(p) if good else None for p, good in zip(pred.tolist(), ok.tolist(), strict=True)
        ]
        where = f" under {self.shift['name']} {level:g}" if level != 0 and self.shift else ""
        msg = f"calibration: non-finite logits (NaN or inf) from the model{where}"
        error = None if ok.all() else [None if good else msg for good in ok.tolist()]
        return [Scored(data, preds, correct, extra, role="test", error=error)]

    def _shifted(self, model: Any, data: Dataset, level: float, env: DiagnosisEnv) -> torch.Tensor:
        from robustlab.core.registry import perturbations
        from robustlab.diagnose.features import extract
        from robustlab.runner.suite import ComponentSpec

        assert self.shift is not None
        spec = ComponentSpec(name=self.shift["name"], params=self.shift.get("params") or {})
        pert = env.ctx.component(perturbations, spec)
        fields = getattr(data, "fields", None) or {}
        task = env.ctx.task(env.unit.task)
        extra = fields if getattr(task, "takes_fields", False) else {}
        x = task.perturb(pert, data.x, level, env.rng, **extra)
        return extract(model, x, ())["logits"]

    def _temperatures(
        self, model: Any, data: Dataset, zc: np.ndarray, y: np.ndarray, env: DiagnosisEnv
    ) -> tuple[np.ndarray, np.ndarray, str, np.ndarray, np.ndarray]:
        """Per example: temperature, fold (-1 with a fit set), how T was fitted, the number of
        fitting examples, whether the fit hit a bound."""
        n = len(y)
        if self.fit is None:
            assert data.ids is not None
            fold = np.empty(n, dtype=np.int64)
            fold[np.argsort(data.ids.numpy(), kind="stable")] = np.arange(n) % self.folds
            temps, n_fit, bound = np.empty(n), np.empty(n, dtype=np.int64), np.empty(n, bool)
            for f in range(self.folds):
                rest = fold != f
                if not rest.any() or rest.all():
                    raise ConfigError(f"calibration: {n} examples are too few for "
                                      f"{self.folds}-fold cross-fitting")  # fmt: skip
                rest &= np.isfinite(zc).all(axis=1)  # examples the model failed on: left out
                r = cal.fit_temperature(zc[rest], y[rest])
                temps[fold == f], n_fit[fold == f], bound[fold == f] = (
                    r.temperature,
                    rest.sum(),
                    r.at_bound,
                )
            return temps, fold, f"{self.folds}-fold cross-fit", n_fit, bound
        held = env.data(self.fit)
        assert held.ids is not None and data.ids is not None
        if self.fit["name"] == env.unit.data.name:  # same source: leave the scored ids out
            held = held.take(torch.nonzero(~torch.isin(held.ids, data.ids)).flatten())
        if not len(held):
            raise ConfigError(
                f"calibration: the fit data {self.fit['name']!r} has no examples outside the "
                "scored data"
            )
        zf = env.features(model, held, ())["logits"].double().numpy()
        fine = np.isfinite(zf).all(axis=1)
        r = cal.fit_temperature(zf[fine], torch.as_tensor(held.y).long().numpy()[fine])
        fit_name = f"{held.name}: {len(held)} held-out examples"
        return (np.full(n, r.temperature), np.full(n, -1), fit_name,
                np.full(n, len(held)), np.full(n, r.at_bound))  # fmt: skip
