"""Robust counterfactual explanations under model change (S42: Hamman, Noorani, Mishra, Magazzeni
& Dutta, ICML 2023, "Robust Counterfactual Explanations for Neural Networks With Probabilistic
Guarantees").

For every example ``x`` of the data the diagnosis finds two counterfactuals (CFs) for a target
class ``t`` (default: the model's runner-up class at ``x``):

* the **closest CF**: a minimal-L2 point the model ``m`` assigns to ``t``, by projected,
  normalised gradient descent on ``||x' - x||^2 + lam * relu(kappa - margin_t(x'))``
  (Wachter et al., 2017, with the logit margin ``margin_t = z_t - max_{j != t} z_j``), the
  closest valid iterate kept, then a bisection on the segment from ``x`` to it for the point
  where the class flips;
* the **stable CF** (T-Rex, the paper's algorithm, as we read its description): starting at the closest CF,
  gradient *ascent* on the Stability ``R`` until ``R >= tau`` (or ``stable_steps`` steps), inside
  the model's input domain.

Stability (the paper's Definition, multi-class form with ``m(x) = softmax(z(x))_t``)::

    R_{k,sigma^2}(x, m) = 1/k * sum_{i=1..k} [ m(x_i) - gamma * |m(x) - m(x_i)| ],
    x_i ~ N(x, sigma^2 I)  (not clipped to the domain).

``gamma`` (the paper's gamma_x; its Lipschitz-free relaxation takes 1, as RoCELib's T-Rex does)
weighs the local variability. ``measure: mean-std`` instead uses the "counterfactual stability"
of Dutta et al. (2022, RobX) that the paper builds on: ``mean_i m(x_i) - std_i m(x_i)``.
The search uses one fixed set of Gaussian samples per example (common random numbers, so ``R``
is a smooth function of ``x'``); the *reported* stabilities use fresh samples.

**Validity under naturally-occurring model change**: each CF is checked on other models ``M``
-- other replicates of the suite's model (``seeds``: retrained with other seeds) and any
registered model specs (``changed``: e.g. the model fine-tuned a little with ``trained``) -- a CF
is valid under ``M`` when ``argmax M(x') = t``. The paper's claim: stable CFs stay valid more
often than closest ones (at a larger distance). The records also hold each changed model's
agreement with ``m`` on the data itself (a naturally-occurring change keeps it high).

Per example (role ``test``; ``pred``/``correct``: the model on ``x``): ``target``,
``closest_found``, ``closest_distance``, ``closest_stability``, ``stable_found``,
``stable_distance``, ``stable_stability``, ``stable_steps``, and per changed model ``<label>``
(``seed-<s>`` or ``changed-<i>``) ``closest_valid.<label>``, ``stable_valid.<label>`` (None where
the CF was not found) and ``agree.<label>``; ``changed_models`` lists the labels.

Example (suite probe)::

    - kind: diagnosis
      name: counterfactuals
      params:
        seeds: [1, 2, 3]
        changed: [{name: trained, params: {base: {name: digits-mlp}, epochs: 1,
                   data: {name: digits, params: {split: train}}}}]
        tau: 0.7
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import diagnoses, models
from robustlab.core.types import NonNegative, NonNegativeInt, Positive, PositiveInt, Seed
from robustlab.diagnose.base import DiagnosisEnv, Scored, require_finite
from robustlab.models.trained import spec_param

Measure = Literal["hamman", "mean-std"]
ROWS = 1 << 16  # Gaussian samples per chunk of examples (memory bound of one pass)


def target_prob(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``m(x) = softmax(z)_t`` per row."""
    return logits.softmax(dim=1).gather(1, target[:, None]).squeeze(1)


def target_margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``z_t - max_{j != t} z_j`` per row (> 0 exactly when the model predicts ``t``)."""
    zt = logits.gather(1, target[:, None]).squeeze(1)
    other = logits.scatter(1, target[:, None], float("-inf")).amax(dim=1)
    return zt - other


def stability(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    noise: torch.Tensor,
    gamma: float = 1.0,
    measure: Measure = "hamman",
) -> torch.Tensor:
    """Stability ``R`` of points ``x`` ``[B, ...]`` for classes ``target`` ``[B]`` with the
    Gaussian offsets ``noise`` ``[B, k, ...]`` (already scaled by sigma): one batched pass over
    the ``B * k`` samples, differentiable in ``x``.

    ``hamman``: ``mean_i [m(x + n_i) - gamma |m(x) - m(x + n_i)|]`` (Hamman et al., 2023);
    ``mean-std``: ``mean_i m(x + n_i) - std_i m(x + n_i)`` (population std; Dutta et al., 2022).

    Example::

        noise = 0.1 * torch.randn(len(x), 256, *x.shape[1:])
        r = stability(model.logits, x, target, noise)
    """
    b, k = noise.shape[:2]
    samples = (x[:, None] + noise).reshape(b * k, *x.shape[1:])
    p = target_prob(logits_fn(samples), target.repeat_interleave(k)).view(b, k)
    if measure == "mean-std":
        return p.mean(1) - p.std(1, correction=0)
    p0 = target_prob(logits_fn(x), target)
    return (p - gamma * (p0[:, None] - p).abs()).mean(1)


def closest_counterfactual(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    lo: float,
    hi: float,
    *,
    steps: int = 300,
    lr: float = 0.05,
    lam: float = 10.0,
    kappa: float = 0.1,
    bisect: int = 25,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimal-L2 counterfactuals of ``x`` for classes ``target`` in the box ``[lo, hi]``:
    ``(x_cf, found)``. Where none was found ``x_cf`` is ``x``.

    Normalised gradient descent on ``||x' - x||^2 + lam * relu(kappa - margin_t(x'))`` (L2 step
    ``lr``, cosine-decayed, projected on the box) keeps each example's closest iterate that the
    model assigns to ``t``; a bisection on the segment from ``x`` to it then finds where the
    class flips (the point itself stays on the valid side). On a linear model this is the
    projection on the decision boundary (tested to 1e-4 relative)."""
    x = x.detach()
    xp = x.clone()
    best = x.clone()
    best_d = torch.full((len(x),), math.inf)
    shape = (-1,) + (1,) * (x.dim() - 1)
    for s in range(steps):
        xg = xp.requires_grad_(True)
        m = target_margin(logits_fn(xg), target)
        d2 = (xg - x).flatten(1).pow(2).sum(1)
        (g,) = torch.autograd.grad((d2 + lam * F.relu(kappa - m)).sum(), xg)
        with torch.no_grad():
            ok = m.detach() > 0
            d = d2.detach().sqrt()
            take = ok & (d < best_d)
            best[take] = xp[take]
            best_d[take] = d[take]
            # normalised gradient step, cosine-decayed: the step follows the gradient's
            # direction (Adam's per-coordinate scaling would bend the path off the minimum)
            eta = lr * 0.5 * (1 + math.cos(math.pi * s / steps))
            gn = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
            xp = (xp.detach() - eta * g / gn).clamp(lo, hi)
    found = torch.isfinite(best_d)
    with torch.no_grad():  # the flip point on the segment x -> best, on the valid side
        a = torch.zeros(len(x))  # invalid side (x itself, unless the model already predicts t)
        b = torch.ones(len(x))
        step = best - x
        for _ in range(bisect):
            mid = (a + b) / 2
            ok = target_margin(logits_fn(x + mid.view(shape) * step), target) > 0
            b = torch.where(ok, mid, b)
            a = torch.where(ok, a, mid)
        out = torch.where(found.view(shape), x + b.view(shape) * step, x)
    return out, found


def stable_counterfactual(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    target: torch.Tensor,
    noise: torch.Tensor,
    lo: float,
    hi: float,
    *,
    tau: float,
    gamma: float = 1.0,
    measure: Measure = "hamman",
    steps: int = 200,
    lr: float = 0.02,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """T-Rex: gradient ascent on the Stability from ``start`` until ``R >= tau`` (per example;
    finished examples stop moving) and the model still predicts ``t``: ``(x_s, found, steps)``.
    ``noise`` ``[B, k, ...]`` is the fixed sample set of the search."""
    x = start.detach().clone()
    used = torch.zeros(len(x), dtype=torch.long)
    done = torch.zeros(len(x), dtype=torch.bool)
    act = torch.arange(len(x))
    shape = (-1,) + (1,) * (x.dim() - 1)
    for it in range(steps + 1):
        # one pass per step over the examples still below tau: it gives R, its gradient and
        # whether the example is finished (finished ones leave the batch)
        xa = x[act].clone().requires_grad_(True)
        r = stability(logits_fn, xa, target[act], noise[act], gamma, measure)
        with torch.no_grad():
            fin = (r.detach() >= tau) & (target_margin(logits_fn(xa), target[act]) > 0)
        done[act[fin]] = True
        keep = ~fin
        if it == steps or not bool(keep.any()):
            break
        (g,) = torch.autograd.grad(r[keep].sum(), xa)
        with torch.no_grad():  # normalised ascent step (the gradient shrinks far from the boundary)
            g = g[keep]
            norm = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
            act = act[keep]
            x[act] = (xa.detach()[keep] + lr * g / norm).clamp(lo, hi)
        used[act] += 1
    return x, done, used


def _takes_seed(name: str) -> bool:
    import inspect

    return "seed" in inspect.signature(models.get(name)).parameters


def _agree(a: torch.Tensor, b: torch.Tensor) -> list[int]:
    return (a.argmax(1) == b.argmax(1)).int().tolist()


@diagnoses.register("counterfactuals")
class Counterfactuals:
    """Closest vs Stability-robust counterfactuals and their validity under model change (S42)."""

    def __init__(
        self,
        target: NonNegativeInt | None = None,
        sigma: Positive = 0.1,
        samples: PositiveInt = 256,
        gamma: NonNegative = 1.0,
        measure: Measure = "hamman",
        tau: float = 0.7,
        steps: PositiveInt = 300,
        lr: Positive = 0.05,
        lam: Positive = 10.0,
        kappa: NonNegative = 0.1,
        stable_steps: PositiveInt = 200,
        stable_lr: Positive = 0.02,
        seeds: list[Seed] | None = None,
        changed: list[spec_param("models")] | None = None,  # type: ignore[valid-type]
        limit: PositiveInt | None = None,
    ) -> None:
        self.target = target
        self.sigma = sigma
        self.samples = samples
        self.gamma = gamma
        self.measure = measure
        self.tau = tau
        self.steps = steps
        self.lr = lr
        self.lam = lam
        self.kappa = kappa
        self.stable_steps = stable_steps
        self.stable_lr = stable_lr
        self.seeds = seeds
        self.changed = changed
        self.limit = limit

    def check_model(self, model: Any) -> None:
        if not self.seeds and not self.changed:
            raise ConfigError(
                "counterfactuals: name the changed models to check validity on: seeds: [...] "
                "(other replicates of the suite's model) and/or changed: [{name, params}]"
            )
        if not getattr(getattr(model, "capabilities", None), "grad", False):
            raise CapabilityError(
                f"counterfactuals: the gradient search needs input gradients, but "
                f"{type(model).__name__} is black-box (capabilities.grad is false); use a torch model"
            )
        if self.target is not None and self.target >= int(getattr(model, "num_classes", 0)):
            raise ConfigError(
                f"counterfactuals: target class {self.target} but the model has "
                f"{getattr(model, 'num_classes', '?')} classes"
            )

    def _changed_models(self, env: DiagnosisEnv) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if self.seeds and not _takes_seed(env.unit.model.name):
            raise ConfigError(
                f"counterfactuals: model {env.unit.model.name!r} takes no seed, so seeds "
                f"{self.seeds} would all be the same model; name changed models instead"
            )
        for s in self.seeds or []:
            out.append((f"seed-{s}", env.ctx.model(env.unit.model, s)))
        for i, spec in enumerate(self.changed or []):
            key = "counterfactuals|changed|" + json.dumps(spec, sort_keys=True, default=str)
            m = env.ctx.cached(key, lambda s=spec: models.create(s["name"], s.get("params")))
            out.append((f"changed-{i}", m))
        return out

    def _search(self, model: Any, x: torch.Tensor, target: torch.Tensor, rng: Any, lo: float,
                hi: float) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """Closest and stable CFs of a chunk of examples, with their fresh-sample Stability."""
        fn = model.logits
        cf, found = closest_counterfactual(fn, x, target, lo, hi, steps=self.steps, lr=self.lr,
                                           lam=self.lam, kappa=self.kappa)  # fmt: skip
        shape = (self.samples, *x.shape[1:])
        search_noise = self.sigma * rng.fork("search").normal(*shape)
        st, st_found, used = stable_counterfactual(
            fn, cf, target, search_noise, lo, hi, tau=self.tau, gamma=self.gamma,
            measure=self.measure, steps=self.stable_steps, lr=self.stable_lr,
        )  # fmt: skip
        del search_noise
        eval_noise = self.sigma * rng.fork("eval").normal(*shape)
        with torch.no_grad():
            r_cf = stability(fn, cf, target, eval_noise, self.gamma, self.measure)
            r_st = stability(fn, st, target, eval_noise, self.gamma, self.measure)
        return cf, found, st, st_found & found, used, r_cf, r_st

    def run(self, model: Any, data: Any, level: float, env: DiagnosisEnv) -> list[Scored]:
        self.check_model(model)
        if not isinstance(data.x, torch.Tensor):
            raise CapabilityError("counterfactuals: needs tensor inputs (image or tabular data)")
        if self.limit is not None and self.limit < len(data):
            data = data.take(list(range(self.limit)))
        x = data.x.float()
        lo, hi = float(model.domain.lo), float(model.domain.hi)
        rng = env.rng  # limited: the streams of the first examples
        if len(rng) != len(x):
            rng = rng.take(torch.arange(len(x)))
        with torch.no_grad():
            z0 = model.logits(x).detach().float().cpu()
        require_finite("counterfactuals: model logits", z0)
        if self.target is None:  # runner-up class
            target = z0.topk(2, dim=1).indices[:, 1]
        else:
            target = torch.full((len(x),), self.target, dtype=torch.long)
            if (z0.argmax(1) == target).any():
                target = torch.where(z0.argmax(1) == target, z0.topk(2, 1).indices[:, 1], target)
        # examples are independent: process them in chunks of at most ROWS Gaussian samples
        # (each example's noise comes from its own stream, so chunking changes nothing)
        size = max(1, ROWS // self.samples)
        parts = [self._search(model, x[i : i + size], target[i : i + size],
                              rng.take(torch.arange(i, min(i + size, len(x)))), lo, hi)
                 for i in range(0, len(x), size)]  # fmt: skip
        cf, found, st, st_found, used, r_cf, r_st = (torch.cat(t) for t in zip(*parts, strict=True))

        def col(v: torch.Tensor, ok: torch.Tensor) -> list[Any]:
            return [float(a) if b else None for a, b in zip(v.tolist(), ok.tolist(), strict=True)]

        d_cf = (cf - x).flatten(1).norm(dim=1)
        d_st = (st - x).flatten(1).norm(dim=1)
        extra: dict[str, list[Any]] = {
            "target": target.tolist(),
            "closest_found": found.int().tolist(),
            "closest_distance": col(d_cf, found),
            "closest_stability": col(r_cf, found),
            "stable_found": st_found.int().tolist(),
            "stable_distance": col(d_st, found),
            "stable_stability": col(r_st, found),
            "stable_steps": used.tolist(),
        }
        labels = []
        for label, other in self._changed_models(env):
            if int(getattr(other, "num_classes", -1)) != int(model.num_classes):
                raise ConfigError(f"counterfactuals: changed model {label} has "
                                  f"{getattr(other, 'num_classes', '?')} classes, the model "
                                  f"{model.num_classes}")  # fmt: skip
            with torch.no_grad():
                zo = other.logits(x).float().cpu()
                v_cf = other.logits(cf).float().cpu().argmax(1) == target
                v_st = other.logits(st).float().cpu().argmax(1) == target
            extra[f"closest_valid.{label}"] = col(v_cf.float(), found)
            extra[f"stable_valid.{label}"] = col(v_st.float(), found)
            extra[f"agree.{label}"] = _agree(zo, z0)
            labels.append(label)
        extra["changed_models"] = [",".join(labels)] * len(x)
        pred = z0.argmax(1)
        correct = (pred == data.y.cpu()).float()
        return [Scored(data, pred, correct, extra, role="test")]
