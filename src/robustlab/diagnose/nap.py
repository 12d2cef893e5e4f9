"""Neural activation patterns as specifications, as a suite probe (S27).

Geng, Kurt, Parvez, Si, Hu & Wang, "Towards Reliable Neural Specifications" (ICML 2023,
arXiv:2210.16114). The registered diagnosis ``nap`` mines one NAP per class on a fitting set with
the statistical threshold ``delta`` (:func:`robustlab.certify.nap.mine_naps`: a neuron is fixed
active in ``NAP_c`` when it is active on at least ``delta`` of class ``c``'s fitting examples,
inactive when inactive on at least ``delta``), checks which patterns the scored examples match
(:func:`robustlab.certify.milp.follows_phases`, the one phase definition that
:func:`~robustlab.certify.nap.matches` and the verifier share: closed phases on the float64
chain) and verifies the specifications "``NAP_c`` implies class ``c``" with the MILP verifier
(:func:`robustlab.certify.nap.verify_nap`).

Records:

* role ``"test"``, one per example of the suite's data: ``pred``/``correct`` the model's
  prediction; ``extra``: ``matched`` (the classes whose NAP it matches), ``own`` (it matches its
  label's NAP: the mean over class ``c``'s examples is the paper's *recall* of ``NAP_c``),
  ``agree`` (the prediction is one of the matched NAPs' labels; null when it matches none),
  ``unique`` (it matches exactly one NAP). At a level ``eps > 0``, for up to ``max_local``
  examples per verified class (the first, in data order, that match their label's NAP and are
  predicted correctly), the local specification "every input of the Linf ball of radius ``eps``
  (∩ the domain) that matches ``NAP_c`` gets class ``c``": ``status`` (0 verified, 1
  counterexample, 2 undecided: time limit; null for examples not checked), ``margin`` (a proven
  lower bound of ``z_c - z_j``), ``seconds``, and the same for the plain ball without the pattern
  (``plain_status``, ``plain_seconds``; the paper's comparison: a NAP verifies larger balls).
* role ``"spec"``, one per class (ids offset as for every other role, label = the class): ``pred``
  null, ``correct`` NaN; ``extra``: ``size`` (neurons fixed), ``delta``, ``fit_recall`` (share of
  the class's fitting examples matching its NAP), and at level 0 the **global** specification over
  the whole input domain: ``status`` (as above; null when the class was not verified), ``stage``
  (``"data"``: a fitting or scored input matches ``NAP_c`` and gets another class in the float64
  chain, no solve needed, unless ``search_data`` is false; ``"milp"``), ``margin_lb`` (the MILP's proven lower bound of
  ``min_j z_c - z_j``; null when a real input decided or the solver proved none), ``seconds``, ``cex`` (the counterexample,
  flat, or null), ``cex_class`` (its class in the float64 chain), ``cex_margin`` (its
  ``z_c - max_j z_j``, negative), ``cex_float32`` (rounded to float32, it still matches ``NAP_c``
  and the model in float32 still predicts another class). At ``eps > 0``: ``checked``,
  ``verified``, ``refuted``, ``undecided`` and ``plain_verified`` counts over the class's balls.

Levels: none (one unit at level 0, the global specification) or Linf radii ``eps >= 0`` (0 is
the global one, ``eps > 0`` the local one). MILP time is the cost: ``time_limit`` seconds per
solve, ``classes`` limits which specifications are verified (matching is computed for all).

Example suite probe::

    - kind: diagnosis
      name: nap
      params: {delta: 0.99, time_limit: 10, max_local: 3}
      levels: [0, 0.05, 0.1]
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from robustlab.certify.milp import COUNTEREXAMPLE, ROBUST, follows_phases, relu_chain
from robustlab.certify.nap import NAP, mine_naps, pre_activations, verify_nap
from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.levels import Levels
from robustlab.core.registry import diagnoses
from robustlab.core.types import Positive, PositiveInt
from robustlab.data.base import Dataset
from robustlab.diagnose.base import DiagnosisEnv, Scored

Delta = Annotated[float, Field(gt=0.5, le=1)]
WORKS = "ReLU MLPs such as digits-mlp or digits-mlp-ibp"


@diagnoses.register("nap", levels=Levels(0, what="eps"))
class NAPSpecs:
    """NAP specifications per class: mining, matching, coverage and MILP verification (see the
    module docstring for the records).

    ``fit``: ``{name, params}`` of the mining set (default: the scored data's train split);
    ``delta``: the mining threshold in (0.5, 1]; ``time_limit``: seconds per MILP solve;
    ``classes``: the classes whose specifications are verified (default all); ``max_local``:
    balls verified per class at ``eps > 0``; ``plain``: also verify the plain balls;
    ``search_data``: refute a global specification by a real input before solving a MILP.
    """

    def __init__(
        self,
        fit: dict[str, Any] | None = None,
        delta: Delta = 0.99,
        time_limit: Positive = 10.0,
        classes: list[int] | None = None,
        max_local: PositiveInt = 3,
        plain: bool = True,
        search_data: bool = True,
    ) -> None:
        self.fit = fit
        self.delta = delta
        self.time_limit = time_limit
        self.classes = classes
        self.max_local = max_local
        self.plain = plain
        self.search_data = search_data

    # hooks called before a run ------------------------------------------------------------------

    def datasets(self) -> dict[str, Any]:
        return {"fit": self.fit} if self.fit else {}

    def check_data(self, data: Dataset, others: dict[str, Dataset]) -> None:
        for d in [data, *others.values()]:
            if not isinstance(d.y, torch.Tensor) or not isinstance(d.x, torch.Tensor):
                raise ConfigError(f"nap: data {d.name!r} needs tensor inputs and class labels")
        fit = others.get("fit")
        if fit is not None and fit.x.shape[1:] != data.x.shape[1:]:
            raise ConfigError(
                f"nap: the fit set {fit.name!r} has inputs of shape {tuple(fit.x.shape[1:])}, "
                f"the scored data {data.name!r} {tuple(data.x.shape[1:])}"
            )
        have = set((fit if fit is not None else data).y.tolist())
        missing = [c for c in self.classes or [] if c not in have]
        if missing:
            raise ConfigError(f"nap: classes {missing} have no examples (classes: {sorted(have)})")

    def check_model(self, model: Any) -> None:
        try:
            chain = relu_chain(model)
        except (ConfigError, CapabilityError) as e:
            raise CapabilityError(
                f"nap needs a chain of affine layers and ReLUs ({WORKS}); "
                f"{type(model).__name__}: {str(e).split('. Use')[0].split(': use')[0]}"
            ) from None
        if len(chain.weights) < 2:
            raise CapabilityError(f"nap: the model has no hidden ReLU layer to pattern ({WORKS})")

    # the run ------------------------------------------------------------------------------------

    def run(self, model: Any, data: Dataset, level: float, env: DiagnosisEnv) -> list[Scored]:
        self.check_model(model)
        fit = env.data(self.fit or env.train_split("nap"))
        self.check_data(data, {"fit": fit})
        chain = relu_chain(model)
        naps = mine_naps(model, fit.x, fit.y, self.delta)
        labels = sorted(naps)
        phases = np.stack([naps[c].phases for c in labels])  # [K, H]
        col = {c: k for k, c in enumerate(labels)}

        z_test = pre_activations(chain, data.x)
        match = follows_phases(z_test[:, None, :], phases[None])  # [N, K]
        pred = env.features(model, data)["logits"].argmax(dim=1)
        y = data.y.cpu()
        yk = torch.tensor([col.get(int(c), -1) for c in y.tolist()])
        own = match[np.arange(len(y)), yk.clamp_min(0).numpy()] & (yk >= 0).numpy()
        pred_k = torch.tensor([col.get(int(c), -1) for c in pred.tolist()]).numpy()
        agree = match[np.arange(len(y)), np.maximum(pred_k, 0)] & (pred_k >= 0)
        any_match = match.any(axis=1)
        test_extra: dict[str, list[Any]] = {
            "matched": [[labels[k] for k in np.flatnonzero(r)] for r in match],
            "own": own.tolist(),
            "agree": [bool(a) if m else None for a, m in zip(agree, any_match, strict=True)],
            "unique": (match.sum(axis=1) == 1).tolist(),
        }
        z_fit = pre_activations(chain, fit.x)
        fit_match = follows_phases(z_fit[:, None, :], phases[None])
        fy = fit.y.cpu().numpy()
        spec_extra: dict[str, list[Any]] = {
            "size": [naps[c].size for c in labels],
            "delta": [self.delta] * len(labels),
            "fit_recall": [float(fit_match[fy == c, k].mean()) for k, c in enumerate(labels)],
        }
        todo = [c for c in labels if self.classes is None or c in self.classes]
        if level == 0:
            spec_extra.update(
                self._global(model, chain, naps, labels, todo, [(z_fit, fit), (z_test, data)])
            )
        else:
            local, counts = self._local(model, naps, todo, data, own, pred, float(level))
            test_extra.update(local)
            spec_extra.update({k: [counts[c][k] for c in labels] for k in counts[labels[0]]})
        spec = Dataset(
            torch.from_numpy(phases.astype(np.float32)), torch.tensor(labels), name="nap-spec",
            classes=data.classes,
        )  # fmt: skip
        nan = torch.full((len(labels),), float("nan"))
        return [
            Scored(data, pred, (pred == y).float(), test_extra, role="test"),
            Scored(spec, [None] * len(labels), nan, spec_extra, role="spec"),
        ]

    def _global(
        self,
        model: Any,
        chain: Any,
        naps: dict[int, NAP],
        labels: list[int],
        todo: list[int],
        sets: list[tuple[np.ndarray, Dataset]],
    ) -> dict[str, list[Any]]:
        """The specifications over the whole input domain: a real input that matches ``NAP_c``
        and gets another class in the float64 chain refutes it at once, else the MILP decides."""
        cols = ("status", "stage", "margin_lb", "seconds", "cex", "cex_class", "cex_margin",
                "cex_float32")  # fmt: skip
        out: dict[str, list[Any]] = {k: [None] * len(labels) for k in cols}
        flat = [(z, d, _logits(chain, z).argmax(axis=1)) for z, d in sets]
        for k, c in enumerate(labels):
            if c not in todo:
                continue
            t0 = time.perf_counter()
            x_cex, stage, low = None, "data", None
            for z, d, top in flat if self.search_data else []:  # batched: a whole set at once
                bad = follows_phases(z, naps[c].phases) & (top != c)
                if bad.any():
                    x_cex = d.x[int(np.flatnonzero(bad)[0])].detach().cpu().double().flatten()
                    x_cex = x_cex.numpy()
                    status = COUNTEREXAMPLE
                    break
            else:
                stage = "milp"
                status, low, x_cex = verify_nap(model, naps[c], time_limit=self.time_limit)
            out["status"][k], out["stage"][k] = int(status), stage
            out["margin_lb"][k] = None if low is None or not np.isfinite(low) else float(low)
            out["seconds"][k] = time.perf_counter() - t0
            if x_cex is not None:
                cex_class, cex_margin, ok32 = _recheck(model, chain, naps[c], x_cex)
                out["cex"][k] = x_cex.tolist()
                out["cex_class"][k], out["cex_margin"][k] = cex_class, cex_margin
                out["cex_float32"][k] = ok32
        return out

    def _local(
        self,
        model: Any,
        naps: dict[int, NAP],
        todo: list[int],
        data: Dataset,
        own: np.ndarray,
        pred: torch.Tensor,
        eps: float,
    ) -> tuple[dict[str, list[Any]], dict[int, dict[str, int]]]:
        """Local specifications: Linf balls of radius ``eps`` around up to ``max_local`` matching,
        correctly predicted examples per class, with and without the pattern."""
        n = len(data)
        cols = ("status", "margin", "seconds", "plain_status", "plain_seconds")
        out: dict[str, list[Any]] = {k: [None] * n for k in cols}
        keys = ("checked", "verified", "refuted", "undecided", "plain_verified")
        counts = {c: dict.fromkeys(keys, 0) for c in naps}
        y = data.y.cpu()
        ok = torch.from_numpy(own) & (pred.cpu() == y)
        for c in todo:
            for i in torch.nonzero(ok & (y == c)).flatten()[: self.max_local].tolist():
                x = data.x[i : i + 1]
                t0 = time.perf_counter()
                status, low, _ = verify_nap(model, naps[c], x, eps, self.time_limit)
                out["status"][i], out["margin"][i] = int(status), _finite(low)
                out["seconds"][i] = time.perf_counter() - t0
                cnt = counts[c]
                cnt["checked"] += 1
                cnt[("verified", "refuted", "undecided")[int(status)]] += 1
                if self.plain:  # the same ball without the pattern: a NAP with no fixed neuron
                    free = NAP(c, np.zeros_like(naps[c].phases), naps[c].delta)
                    t0 = time.perf_counter()
                    p_status, _, _ = verify_nap(model, free, x, eps, self.time_limit)
                    out["plain_status"][i] = int(p_status)
                    out["plain_seconds"][i] = time.perf_counter() - t0
                    cnt["plain_verified"] += int(p_status == ROBUST)
        return out, counts


def _logits(chain: Any, pre: np.ndarray) -> np.ndarray:
    """Float64 chain logits from the hidden pre-activations ``pre`` ``[B, hidden]``."""
    last = chain.weights[-2].shape[0]
    return np.maximum(pre[:, -last:], 0) @ chain.weights[-1].T + chain.biases[-1]


def _finite(v: float | None) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _recheck(model: Any, chain: Any, nap: NAP, x: np.ndarray) -> tuple[int, float, bool]:
    """A counterexample's class and margin in the float64 chain, and whether it survives float32:
    rounded to float32 it still matches the pattern and the model (float32) gets another class."""
    pre = pre_activations(chain, torch.from_numpy(x)[None])
    z = _logits(chain, pre)[0]
    c = nap.label
    margin = float(z[c] - np.delete(z, c).max())
    x32 = torch.from_numpy(x).float().view(1, *model.domain.shape)
    with torch.no_grad():
        pred32 = int(model.logits(x32).argmax(dim=1)[0])
    still = bool(follows_phases(pre_activations(chain, x32), nap.phases)[0])
    return int(z.argmax()), margin, still and pred32 != c
