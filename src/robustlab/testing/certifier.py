"""Contract check for certifiers (including soundness on sampled points)."""

from __future__ import annotations

from typing import Any

import torch
from scipy import stats

from robustlab.core.rng import seed_from
from robustlab.core.types import (
    Certificate,
    lp_norm,
    parse_norm,
)
from robustlab.testing.common import _flags, _ids, _perm, _rng, _same, _unchanged


def check_certifier(
    certifier: Any,
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int = 0,
    ids: torch.Tensor | None = None,
    points: int = 4,
    gradient_points: bool = True,
    alpha: float | None = None,
    predict_kwargs: dict[str, Any] | None = None,
    confidence: float = 1e-6,
) -> Certificate:
    """Check a certifier's contract on ``x, y``, including soundness on sampled points; return it.

    Invariants: ``pred`` int64 ``[B]``, ``radius`` float ``[B]`` and ``>= 0``, ``abstained`` bool
    ``[B]``, a known ``norm``; abstained examples have ``pred == -1`` and radius 0, the others a class
    in ``[0, num_classes)``; inputs not mutated; deterministic under a seed; batch-order invariant.

    Soundness: for each certified example (radius ``r > 0``), ``points`` random points on spheres of
    radius ``0.5 r .. 0.99 r`` in the certificate's norm (clipped to the model's domain, which keeps
    them in the ball) and, if the model has gradients and ``gradient_points``, one PGD point that
    attacks the base model within ``0.99 r``, must get the certified prediction from the certifier's
    own prediction procedure: ``certifier.predict(model, x, rng=..., **predict_kwargs)`` if it has
    one (an abstention, -1, is not a violation), else the base model's argmax. For probabilistic
    certifiers (failure probability ``alpha``, default ``certifier.alpha`` or 0), the number of
    violated examples may not exceed the ``1 - confidence`` binomial quantile of what failures of
    the certificate and of the prediction procedure explain; deterministic certifiers allow none.
    """
    ids = _ids(x, ids)
    name = f"certifier {getattr(certifier, 'registered_name', type(certifier).__name__)}"
    x0, y0 = x.clone(), y.clone()
    cert = certifier.certify(model, x, y, rng=_rng(seed, ids))
    _unchanged(x0, x, f"{name} (x)")
    _unchanged(y0, y, f"{name} (y)")
    _check_certificate(cert, x.shape[0], model.num_classes, name)
    again = certifier.certify(model, x, y, rng=_rng(seed, ids))
    for field in ("pred", "abstained", "radius"):
        what = f"{name} is not deterministic under a seed ({field})"
        _same(getattr(again, field), getattr(cert, field), what, 1e-6)
    p = _perm(x.shape[0], seed)
    perm = certifier.certify(model, x[p], y[p], rng=_rng(seed, ids[p]))
    for field in ("pred", "abstained", "radius"):
        got, want = getattr(perm, field), getattr(cert, field)
        _same(
            got,
            want[p.to(want.device)],
            f"{name} is not batch-order invariant ({field}, shuffled sub-batch)",
            1e-6,
        )
    _check_soundness(
        certifier, model, x, cert, seed, points, gradient_points, alpha, predict_kwargs, confidence
    )
    return cert


def _check_certificate(cert: Any, b: int, num_classes: int, name: str) -> None:
    assert isinstance(cert, Certificate), f"{name} returned {type(cert).__name__}, not Certificate"
    _flags(cert.pred, b, torch.int64, f"{name} pred")
    _flags(cert.abstained, b, torch.bool, f"{name} abstained")
    assert isinstance(cert.radius, torch.Tensor) and tuple(cert.radius.shape) == (b,), (
        f"{name} radius must be a [{b}] tensor"
    )
    assert cert.radius.is_floating_point(), f"{name} radius has dtype {cert.radius.dtype}"
    parse_norm(cert.norm)
    r, pred, ab = cert.radius.cpu(), cert.pred.cpu(), cert.abstained.cpu()
    assert not bool(torch.isnan(r).any()), f"{name} radius contains NaN"
    assert bool((r >= 0).all()), f"{name} certified a negative radius ({float(r.min()):.4g})"
    assert bool((pred[ab] == -1).all()), f"{name}: abstained examples must have pred == -1"
    assert bool((r[ab] == 0).all()), f"{name}: abstained examples must have radius 0"
    ok = (pred[~ab] >= 0) & (pred[~ab] < num_classes)
    assert bool(ok.all()), (
        f"{name}: non-abstained predictions must be classes in [0, {num_classes})"
    )


def _sphere_points(x: torch.Tensor, r: torch.Tensor, norm: str, k: int, seed: int) -> torch.Tensor:
    """``k`` random points per example at distance ``0.5 r .. 0.99 r`` in ``norm`` ([k * B, ...])."""
    b = x.shape[0]
    rng = _rng(seed_from("sphere", seed), torch.arange(b * k))
    d = (2 * rng.uniform(*x.shape[1:]) - 1).to(x.device, torch.float64).flatten(1)
    d = d / lp_norm(d, norm).clamp_min(1e-12)[:, None]
    scale = 0.5 + 0.49 * rng.uniform(1).to(x.device, torch.float64)
    rr = r.to(x.device, torch.float64).repeat(k)[:, None]
    xs = x.repeat(k, *([1] * (x.dim() - 1)))
    return xs + (d * scale * rr).view_as(xs).to(x.dtype)


def _gradient_points(
    model: Any, x: torch.Tensor, c: torch.Tensor, r: torch.Tensor, norm: str, steps: int = 10
) -> torch.Tensor:
    """PGD on the base model's cross-entropy for class ``c`` within per-example radius ``0.99 r``."""
    eps = (0.99 * r).to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(model.logits(x + delta), c.to(x.device))
            (g,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if norm == "inf":
                delta = (delta + 0.25 * eps * g.sign()).clamp(-eps, eps)
            else:
                gn = lp_norm(g.flatten(1), "2").clamp_min(1e-12).view_as(eps)
                delta = delta + 0.25 * eps * g / gn
                dn = lp_norm(delta.flatten(1), norm).view_as(eps)
                delta = delta * (eps / dn.clamp_min(1e-12)).clamp(max=1.0)
            delta = (x + delta).clamp(model.domain.lo, model.domain.hi) - x
    return (x + delta).detach()


def _check_soundness(
    certifier: Any,
    model: Any,
    x: torch.Tensor,
    cert: Certificate,
    seed: int,
    points: int,
    gradient_points: bool,
    alpha: float | None,
    predict_kwargs: dict[str, Any] | None,
    confidence: float,
) -> None:
    name = f"certifier {getattr(certifier, 'registered_name', type(certifier).__name__)}"
    norm = parse_norm(cert.norm)
    keep = (~cert.abstained.cpu() & (cert.radius.cpu() > 0)).nonzero().flatten()
    if keep.numel() == 0 or points + int(gradient_points) == 0:
        return
    xs, rs, cs = x[keep], cert.radius.cpu()[keep], cert.pred.cpu()[keep]
    rs = rs.clamp(max=1e6)  # an unbounded certificate is tested at a large radius
    pts = [_sphere_points(xs, rs, norm, points, seed)] if points else []
    if gradient_points and getattr(model.capabilities, "grad", False):
        pts.append(_gradient_points(model, xs, cs, rs, norm))
    pts_t = model.domain.clip(torch.cat(pts))
    m = pts_t.shape[0] // xs.shape[0]
    kwargs = dict(predict_kwargs or {})
    predict = getattr(certifier, "predict", None)
    if predict is not None:
        prng = _rng(seed_from("soundness", seed), torch.arange(pts_t.shape[0]))
        got = predict(model, pts_t, rng=prng, **kwargs).cpu()
        ok = (got == cs.repeat(m)) | (got == -1)
    else:
        with torch.no_grad():
            got = model.logits(pts_t).argmax(dim=1).cpu()
        ok = got == cs.repeat(m)
    bad_examples = (~ok).view(m, -1).any(dim=0)
    n_bad = int(bad_examples.sum())
    a_cert = float(getattr(certifier, "alpha", 0.0) if alpha is None else alpha)
    a_pred = float(kwargs.get("alpha", a_cert)) if predict is not None else 0.0
    p_fail = min(1.0, a_cert + m * a_pred)
    allowed = int(stats.binom.ppf(1 - confidence, keep.numel(), p_fail)) if p_fail > 0 else 0
    first = int(keep[bad_examples.nonzero().flatten()[0]]) if n_bad else -1
    assert n_bad <= allowed, (
        f"{name} is unsound on samples: for {n_bad} of {keep.numel()} certified examples a point "
        f"within the certified L{norm} radius gets another prediction (allowed by alpha: {allowed}; "
        f"first: example {first}, radius {float(cert.radius[first]) if n_bad else 0:.4g})"
    )
