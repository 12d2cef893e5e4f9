"""FAB minimum-norm attack: exact projections (vs scipy LP/QP), the same minimal norms as
torchattacks' FAB (same algorithm), minimal norms <= a per-example bisection over PGD's eps,
budgets, the ensemble option, the median-minimal-perturbation metric from a suite, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustlab.attacks.base import Targeted
from robustlab.attacks.fab_core import project
from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.records import frame
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel, lp_norm
from robustlab.metrics.vision import median_min_perturbation

N = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cnn() -> Any:
    return models.create("digits-cnn")


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    d = datasets.get("digits")(split="test")
    return d.x[:N], d.y[:N]


def rng(n: int) -> ExampleRNG:
    return ExampleRNG.from_seed(0, torch.arange(n))


@pytest.mark.parametrize("norm", ["inf", "2", "1"])
def test_projection_is_exact(norm: str) -> None:
    from scipy.optimize import linprog, minimize

    rs = np.random.RandomState(1)
    checked = 0
    for _ in range(30):
        d = 6
        p, w, c = rs.rand(1, d), rs.randn(1, d), rs.randn(1) * 0.7
        lo, hi = -p[0], 1 - p[0]
        reach = np.stack([w[0] * lo, w[0] * hi])
        if not reach.min(0).sum() <= c[0] <= reach.max(0).sum():
            continue
        got = project(*(torch.tensor(a, dtype=torch.float64) for a in (p, w, c)), 0.0, 1.0, norm)
        assert abs(float((torch.tensor(w) * got).sum()) - c[0]) < 1e-9
        assert float((torch.tensor(p) + got).min()) >= -1e-12
        assert float((torch.tensor(p) + got).max()) <= 1 + 1e-12
        if norm == "2":
            r = minimize(lambda v: (v**2).sum(), np.zeros(d), jac=lambda v: 2 * v,
                         constraints=[{"type": "eq", "fun": lambda v, w=w, c=c: w[0] @ v - c[0]}],
                         bounds=list(zip(lo, hi, strict=True)), method="SLSQP",
                         options={"ftol": 1e-14, "maxiter": 500})  # fmt: skip
            opt = float(np.sqrt(r.fun))
        else:  # Linf: min t, |d_i| <= t; L1: min sum s_i, |d_i| <= s_i
            m = 1 if norm == "inf" else d
            ind = np.ones((d, m)) if norm == "inf" else np.eye(d)
            a_ub = np.vstack([np.c_[np.eye(d), -ind], np.c_[-np.eye(d), -ind]])
            r = linprog(np.r_[np.zeros(d), np.ones(m)], A_ub=a_ub, b_ub=np.zeros(2 * d),
                        A_eq=np.r_[w[0], np.zeros(m)][None], b_eq=c,
                        bounds=list(zip(lo, hi, strict=True)) + [(0, None)] * m)  # fmt: skip
            opt = float(r.fun)
        assert abs(float(lp_norm(got, norm)) - opt) < 1e-6
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize(("norm", "tnorm"), [("inf", "Linf"), ("2", "L2")])
def test_same_minimal_norms_as_torchattacks_fab(cnn: Any, data: Any, norm: str, tnorm: str) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    x, y = data
    threat = ThreatModel(norm, 1.0 if norm == "inf" else 10.0)
    res = attacks.create("fab", {"steps": 30})(cnn, x, y, threat, rng=rng(N))

    class Net(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return cnn.logits(z)

    ref = torchattacks.FAB(Net(), norm=tnorm, eps=threat.eps, steps=30, n_classes=10)(x, y)
    with torch.no_grad():
        fooled = cnn.logits(ref).argmax(1) != y
    ref_norm = torch.where(fooled, threat.distance(ref, x), torch.tensor(float("inf")))
    assert torch.allclose(res.extra["min_norm"], ref_norm, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("norm", "lo", "hi"), [("inf", 0.01, 0.5), ("2", 0.05, 3.0)])
def test_minimal_norms_below_pgd_bisection(
    cnn: Any, data: Any, norm: str, lo: float, hi: float
) -> None:
    x, y = data
    big = ThreatModel(norm, 1.0 if norm == "inf" else 10.0)
    res = attacks.create("fab", {"steps": 100, "restarts": 3})(cnn, x, y, big, rng=rng(N))
    mn = res.extra["min_norm"]
    with torch.no_grad():  # every returned example is misclassified, at the reported distance
        assert bool((cnn.logits(res.x_adv).argmax(1) != y)[res.success].all())
    assert bool(res.success.all())
    assert torch.allclose(big.distance(res.x_adv, x), mn, atol=1e-5)
    # per-example bisection over PGD's eps (PGD-20, 2 restarts), 7 halvings
    low, high = torch.full((N,), lo), torch.full((N,), hi)
    for _ in range(7):
        mid = (low + high) / 2
        ok = torch.zeros(N, dtype=torch.bool)
        for v in mid.unique():
            sel = torch.nonzero(mid == v).flatten()
            pgd = attacks.create("pgd", {"steps": 20, "restarts": 2})
            r = pgd(cnn, x[sel], y[sel], ThreatModel(norm, float(v)), rng=rng(N).take(sel))
            ok[sel] = r.success
        high, low = torch.where(ok, mid, high), torch.where(ok, low, mid)
    assert float(mn.median()) <= float(high.median()) * 1.01
    assert float((mn <= high * 1.05).float().mean()) >= 0.9


def test_budget_and_ensemble_option(cnn: Any, data: Any) -> None:
    x, y = data
    threat = ThreatModel("inf", 0.08)
    res = attacks.create("fab", {"steps": 30})(cnn, x, y, threat, rng=rng(N))
    assert torch.equal(res.success, res.extra["min_norm"] <= threat.eps * (1 + 1e-6))
    assert float(threat.distance(res.x_adv, x).max()) <= threat.eps + 1e-6
    # AutoAttack's use: later targets only for examples not yet fooled within eps -> same flags
    fab_t = {"steps": 20, "n_targets": 3, "restarts": 2}
    full = attacks.create("fab", fab_t)(cnn, x, y, threat, rng=rng(N))
    lazy = attacks.create("fab", {**fab_t, "minimize": False})(cnn, x, y, threat, rng=rng(N))
    assert torch.equal(full.success, lazy.success)
    assert int(lazy.queries.sum()) < int(full.queries.sum())
    weak = [{"name": "pgd", "steps": 1, "random_start": False}]
    ens = attacks.create("autoattack", {"attacks": weak, "fab": {"steps": 30, "n_targets": 3}})
    assert [n for n, _ in ens.members()] == ["pgd", "fab"]
    got = ens(cnn, x, y, threat, rng=rng(N))
    alone = attacks.create("autoattack", {"attacks": weak})(cnn, x, y, threat, rng=rng(N))
    assert int(got.success.sum()) > int(alone.success.sum())
    assert bool((got.extra["member"] == 1).any())  # FAB fooled what 1-step PGD did not
    names = [n for n, _ in attacks.create("autoattack", {"fab": True}).members()]
    assert names == ["apgd", "apgd_t", "fab", "square"]


def test_median_min_perturbation_from_a_suite(cnn: Any, data: Any, tmp_path: Path) -> None:
    from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite, run_suite
    from robustlab.store import Store

    probe = ProbeSpec(kind="attack", name="fab", params={"steps": 20}, levels=[1.0], norm="2")
    suite = Suite(name="fab", models=[ModelSpec(name="digits-cnn")],
                  data=ComponentSpec(name="digits", params={"split": "test"}),
                  probes=[probe], seed=0, shard_size=400)  # fmt: skip
    store = Store(tmp_path / "s.db")
    df = frame(store.records(run_suite(suite, store, progress=False)))
    df = df[df["kind"] == "attack"]
    d = datasets.get("digits")(split="test")
    direct = attacks.create("fab", {"steps": 20})(
        cnn, d.x, d.y, ThreatModel("2", 1.0), rng=ExampleRNG.from_seed(0, d.ids)
    )
    mn = direct.extra["min_norm"]
    want = float(torch.where(mn <= 1.0 + 1e-6, mn, torch.tensor(float("inf"))).median())
    assert median_min_perturbation(df) == pytest.approx(want, abs=0.05)
    assert 0.2 < median_min_perturbation(df) < 1.0


def test_bad_input(cnn: Any, data: Any) -> None:
    x, y = data
    fab = attacks.create("fab")
    with pytest.raises(ConfigError, match="untargeted"):
        fab(cnn, x, y, ThreatModel("inf", 0.1), goal=Targeted(), rng=rng(N))
    with pytest.raises(ConfigError, match="steps"):
        attacks.create("fab", {"steps": 0})(cnn, x, y, ThreatModel("inf", 0.1), rng=rng(N))
    with pytest.raises(CapabilityError, match="gradients"):
        fab(models.create("digits-logreg"), x, y, ThreatModel("inf", 0.1), rng=rng(N))
