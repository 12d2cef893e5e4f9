"""Contract checks for robustlab components: attacks, perturbations, certifiers and model adapters.

Each ``check_*`` function runs a component on a small real batch and raises :class:`AssertionError`
with a precise message if it breaks one of the invariants every component of its kind must keep
(see the "Contract tests" section of the design notes). Parametrize them over a registry so every
registered component -- built-in or plugin -- is checked::

    import pytest
    from robustlab.core.registry import attacks
    from robustlab.core.types import ThreatModel
    from robustlab.testing import check_attack

    @pytest.mark.parametrize("name", attacks.names())
    def test_attack_contract(name, model, x, y):
        check_attack(attacks.create(name), model, x, y, ThreatModel("inf", 0.1))

All checks key randomness by example ids ``0..B-1`` (or ``ids``) under ``seed`` and test batch-order
invariance by running the component on a shuffled subset of the batch with the matching ids, which
must give the same subset of the outputs (so results depend neither on an example's position nor on
the other examples in its batch: shards and resumed runs give the same numbers).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from scipy import stats

from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.core.types import (
    AttackResult,
    Capabilities,
    Certificate,
    Domain,
    ThreatModel,
    lp_norm,
    parse_norm,
)

__all__ = ["check_adapter", "check_attack", "check_certifier", "check_perturbation"]

ATOL = 1e-5  # float tolerance for comparing outputs of the same computation in another batch order


def _rng(seed: int, ids: torch.Tensor) -> ExampleRNG:
    return ExampleRNG.from_seed(seed, ids)


def _perm(n: int, seed: int) -> torch.Tensor:
    """A shuffled subset of about half of ``range(n)``: running a component on it checks that an
    example's result depends neither on its position nor on the other examples in the batch."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed_from("perm", seed)))
    if n > 1 and torch.equal(perm, torch.arange(n)):
        perm = perm.flip(0)
    return perm[: max(1, (n + 1) // 2)] if n > 2 else perm


def _ids(x: Any, ids: torch.Tensor | None) -> torch.Tensor:
    return torch.arange(len(x)) if ids is None else ids


def _same(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = 0.0) -> None:
    """Assert two tensors are equal (within ``atol``), naming the first example that differs."""
    assert a.shape == b.shape, f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}"
    diff = (a.double() - b.double()).abs().reshape(a.shape[0], -1) if a.numel() else None
    if diff is None:
        return
    nan_ok = torch.isnan(a.double()) & torch.isnan(b.double())
    diff = diff.masked_fill(nan_ok.reshape(a.shape[0], -1), 0).nan_to_num(float("inf"))
    bad = (diff > atol).any(dim=1).nonzero().flatten()
    assert bad.numel() == 0, (
        f"{what}: {bad.numel()} of {a.shape[0]} examples differ (first: row {int(bad[0])}, "
        f"max abs difference {float(diff[bad[0]].max()):.3g} > tolerance {atol:g})"
    )


def _unchanged(before: Any, after: Any, what: str) -> None:
    if isinstance(before, torch.Tensor):
        assert torch.equal(before, after), f"{what} mutated its input tensor in place"
    else:
        assert before == after, f"{what} mutated its (non-tensor) input in place"


def _like(out: torch.Tensor, x: torch.Tensor, what: str) -> None:
    assert isinstance(out, torch.Tensor), f"{what} returned {type(out).__name__}, not a tensor"
    assert out.shape == x.shape, f"{what} changed the shape {tuple(x.shape)} -> {tuple(out.shape)}"
    assert out.dtype == x.dtype, f"{what} changed the dtype {x.dtype} -> {out.dtype}"
    assert out.device == x.device, f"{what} moved the tensor {x.device} -> {out.device}"


def _flags(t: Any, n: int, dtype: torch.dtype, what: str) -> None:
    assert isinstance(t, torch.Tensor), f"{what} is {type(t).__name__}, not a tensor"
    assert tuple(t.shape) == (n,), f"{what} has shape {tuple(t.shape)}, expected ({n},)"
    assert t.dtype == dtype, f"{what} has dtype {t.dtype}, expected {dtype}"


def check_attack(
    attack: Any,
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    seed: int = 0,
    ids: torch.Tensor | None = None,
    tol: float = 1e-5,
) -> AttackResult:
    """Check an (untargeted) attack's contract on ``x, y``; return its result.

    Invariants: ``x_adv`` within ``threat.eps`` of ``x`` in the threat norm (up to ``tol`` relative
    to ``max(1, eps)``) and inside ``model.domain``; ``x_adv`` keeps shape, dtype and device;
    ``success`` is bool ``[B]`` and agrees with ``argmax model.logits(x_adv) != y``; ``queries`` is
    int64 ``[B]`` and ``>= 0``; inputs are not mutated; the same seed gives the same result; a shuffled
    sub-batch (with its ids) gets the same results as in the full batch.
    """
    ids = _ids(x, ids)
    name = f"attack {getattr(attack, 'registered_name', type(attack).__name__)} ({threat.norm})"
    x0, y0 = x.clone(), y.clone()
    res = attack(model, x, y, threat, rng=_rng(seed, ids))
    _unchanged(x0, x, f"{name} (x)")
    _unchanged(y0, y, f"{name} (y)")
    assert isinstance(res, AttackResult), f"{name} returned {type(res).__name__}, not AttackResult"
    _like(res.x_adv, x, f"{name} x_adv")
    b = x.shape[0]
    _flags(res.success, b, torch.bool, f"{name} success")
    _flags(res.queries, b, torch.int64, f"{name} queries")
    assert bool((res.queries >= 0).all()), f"{name} reports negative query counts"
    assert bool(torch.isfinite(res.x_adv).all()), f"{name} x_adv contains NaN or inf"
    dist = threat.distance(res.x_adv.double(), x.double())
    slack = tol * max(1.0, threat.eps)
    far = (dist > threat.eps + slack).nonzero().flatten()
    assert far.numel() == 0, (
        f"{name} left the eps-ball: {far.numel()} of {b} examples at L{threat.norm} distance > "
        f"eps={threat.eps:g} (worst {float(dist.max()):.6g}, example {int(dist.argmax())})"
    )
    dom = model.domain
    lo, hi = float(res.x_adv.min()), float(res.x_adv.max())
    assert lo >= dom.lo - tol and hi <= dom.hi + tol, (
        f"{name} left the model's domain [{dom.lo:g}, {dom.hi:g}]: x_adv in [{lo:.6g}, {hi:.6g}]"
    )
    with torch.no_grad():
        fooled = (model.logits(res.x_adv).argmax(dim=1).cpu() != y.cpu()).to(torch.bool)
    wrong = (fooled != res.success.cpu()).nonzero().flatten()
    assert wrong.numel() == 0, (
        f"{name} success flag disagrees with the model's prediction on x_adv for {wrong.numel()} "
        f"of {b} examples (first: example {int(wrong[0]) if wrong.numel() else -1})"
    )
    again = attack(model, x, y, threat, rng=_rng(seed, ids))
    _same(again.x_adv, res.x_adv, f"{name} is not deterministic under a seed (x_adv)", ATOL)
    _same(again.success, res.success, f"{name} is not deterministic under a seed (success)")
    _same(again.queries, res.queries, f"{name} is not deterministic under a seed (queries)")
    p = _perm(b, seed)
    perm = attack(model, x[p], y[p], threat, rng=_rng(seed, ids[p]))
    what = f"{name} is not batch-order invariant (shuffled sub-batch)"
    _same(perm.x_adv, res.x_adv[p], f"{what} (x_adv)", ATOL)
    _same(perm.success, res.success[p.to(res.success.device)], f"{what} (success)")
    _same(perm.queries, res.queries[p.to(res.queries.device)], f"{what} (queries)")
    return res


def check_perturbation(
    perturbation: Any,
    x: Any,
    *,
    severities: Any = None,
    seed: int = 0,
    ids: torch.Tensor | None = None,
) -> None:
    """Check a perturbation's contract on the batch ``x`` at each severity.

    Invariants: output of the same shape, dtype and device (same length for list inputs); input not
    mutated; deterministic under a seed; batch-order invariant (a shuffled sub-batch with its ids
    gets the same outputs); severity 0, where accepted, is the identity; image outputs stay finite in [0, 1].
    """
    ids = _ids(x, ids)
    name = f"perturbation {getattr(perturbation, 'registered_name', type(perturbation).__name__)}"
    image = getattr(perturbation, "modality", "image") == "image"
    levels = list(perturbation.severities if severities is None else severities)
    assert levels, f"{name} declares no severities"
    p = _perm(len(x), seed)
    for s in levels:
        what = f"{name} at severity {s}"
        x0 = x.clone() if isinstance(x, torch.Tensor) else copy.deepcopy(x)
        out = perturbation(x, s, _rng(seed, ids))
        _unchanged(x0, x, what)
        again = perturbation(x, s, _rng(seed, ids))
        xp = x[p] if isinstance(x, torch.Tensor) else [x[i] for i in p.tolist()]
        outp = perturbation(xp, s, _rng(seed, ids[p]))
        if not isinstance(x, torch.Tensor):
            assert len(out) == len(x), f"{what} returned {len(out)} items for {len(x)}"
            assert again == out, f"{what} is not deterministic under a seed"
            assert outp == [out[i] for i in p.tolist()], (
                f"{what} is not batch-order invariant (shuffled sub-batch)"
            )
            continue
        _like(out, x, what)
        _same(again, out, f"{what} is not deterministic under a seed", ATOL)
        _same(
            outp,
            out[p.to(out.device)],
            f"{what} is not batch-order invariant (shuffled sub-batch)",
            ATOL,
        )
        if image:
            assert bool(torch.isfinite(out).all()), f"{what} produced NaN or inf"
            lo, hi = float(out.min()), float(out.max())
            assert lo >= 0 and hi <= 1, f"{what} left [0, 1]: output in [{lo:.4g}, {hi:.4g}]"
    try:
        out0 = perturbation(x, 0, _rng(seed, ids))
    except (ValueError, NotImplementedError):
        return  # severity 0 not supported
    if isinstance(x, torch.Tensor):
        _same(out0, x, f"{name} at severity 0 is not the identity", 1e-6)
    else:
        assert out0 == x, f"{name} at severity 0 is not the identity"


def check_adapter(adapter: Any, x: torch.Tensor) -> None:
    """Check a classifier adapter's contract on the batch ``x`` (which must lie in its domain).

    Invariants: declares ``domain`` (a :class:`Domain`), ``capabilities`` and ``num_classes``;
    ``logits`` is a finite float ``[B, num_classes]`` tensor, deterministic and batch-order invariant;
    the input is not mutated; ``fingerprint()`` is a stable non-empty string; with
    ``capabilities.grad`` the logits have finite input gradients of the input's shape.
    """
    name = f"adapter {type(adapter).__name__}"
    assert isinstance(getattr(adapter, "domain", None), Domain), f"{name} declares no Domain"
    caps = getattr(adapter, "capabilities", None)
    assert isinstance(caps, Capabilities), f"{name} declares no Capabilities"
    k = getattr(adapter, "num_classes", None)
    assert isinstance(k, int) and k > 0, f"{name}.num_classes must be an int > 0, got {k!r}"
    adapter.domain.check(x, f"{name} test input")
    x0 = x.clone()
    with torch.no_grad():
        out = adapter.logits(x)
        _unchanged(x0, x, f"{name}.logits")
        assert isinstance(out, torch.Tensor), f"{name}.logits returned {type(out).__name__}"
        assert tuple(out.shape) == (x.shape[0], k), (
            f"{name}.logits returned shape {tuple(out.shape)}, expected ({x.shape[0]}, {k})"
        )
        assert out.is_floating_point(), f"{name}.logits returned dtype {out.dtype}"
        assert bool(torch.isfinite(out).all()), f"{name}.logits returned NaN or inf"
        _same(adapter.logits(x), out, f"{name}.logits is not deterministic", ATOL)
        p = _perm(x.shape[0], 0)
        _same(
            adapter.logits(x[p]),
            out[p.to(out.device)],
            f"{name} is not batch-order invariant (shuffled sub-batch)",
            ATOL,
        )
    fp = adapter.fingerprint()
    assert isinstance(fp, str) and fp, (
        f"{name}.fingerprint() must be a non-empty string, got {fp!r}"
    )
    assert adapter.fingerprint() == fp, f"{name}.fingerprint() is not stable"
    if caps.grad:
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(adapter.logits(xg).sum(), xg, allow_unused=True)
        assert g is not None, f"{name} declares grad but its logits do not depend on the input"
        assert g.shape == x.shape, f"{name} input gradient has shape {tuple(g.shape)}"
        assert bool(torch.isfinite(g).all()), f"{name} input gradient contains NaN or inf"


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
