"""Linear-relaxation bounds and the staged MILP verifier (issue 22): soundness and old = new verdicts.

The bounds must contain every pre-activation reachable from the ball (sampled points and box
corners), lie within the interval bounds, and lower-bound every margin; the staged verifier
(bounds, PGD, MILP with a cutoff) must give the verdict of the former formulation (interval big-M,
one MILP per class not proven by interval arithmetic, no cutoff) on every example both decide,
a "robust" must survive a strong PGD, and every counterexample must be real.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.certify.bounds import (
    linear_bounds,
    margin_bounds,
    unstable_counts,
)
from robustlab.certify.milp import (
    ATTACK,
    BOUNDS,
    COUNTEREXAMPLE,
    ROBUST,
    SOLVER,
    UNDECIDED,
    MILPVerifier,
    Problem,
    _boxes,
    decide,
    interval_margins,
    relu_chain,
)
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Domain, ThreatModel
from robustlab.models import TorchClassifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits() -> Any:
    return datasets.get("digits")(split="test")


def _deep() -> TorchClassifier:
    """A random 64-24-16-12-10 ReLU net (three hidden layers: back-substitution over two)."""
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(),
                        nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10))  # fmt: skip
    for p in net.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.5
    return TorchClassifier(net, 10, Domain(0.0, 1.0, (1, 8, 8)))


def _cnn() -> TorchClassifier:
    """A conv + eval BatchNorm net with the adapter's normalization (densified by relu_chain)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 10))  # fmt: skip
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    return TorchClassifier(net.eval(), 10, Domain(0, 1, (1, 8, 8)), mean=[0.4], std=[0.3])


def _samples(lo: np.ndarray, hi: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` points per box: half uniform inside, half box corners. ``[B, n, d]``."""
    g = np.random.default_rng(seed)
    u = g.random((lo.shape[0], n, lo.shape[1]))
    u[:, n // 2 :] = u[:, n // 2 :] > 0.5
    return lo[:, None] + u * (hi - lo)[:, None]


@pytest.mark.parametrize("which", ["digits-mlp", "deep", "cnn"])
def test_linear_bounds_contain_sampled_points_and_lie_within_ibp(digits: Any, which: str) -> None:
    model = {"digits-mlp": lambda: models.create("digits-mlp", {"hidden": 32}), "deep": _deep,
             "cnn": _cnn}[which]()  # fmt: skip
    chain = relu_chain(model)
    x = digits.x[:12]
    with torch.no_grad():
        pred = model.logits(x).argmax(1).numpy()
    for eps in (0.02, 0.1):
        lo, hi = _boxes(model, x, eps)
        pre, ibp = linear_bounds(chain, lo, hi), chain.bounds(lo, hi)
        for i in (0, 5):  # the batched interval bounds are the per-example ones
            for (a, b), (c, d) in zip(ibp, chain.bounds(lo[i], hi[i]), strict=True):
                np.testing.assert_allclose(a[i], c, rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(b[i], d, rtol=1e-12, atol=1e-12)
        for (lb, ub), (il, iu) in zip(pre, ibp, strict=False):
            assert bool((lb >= il).all() & (ub <= iu).all() & (lb <= ub).all())
        pts = _samples(lo, hi, 400, seed=int(eps * 100))
        h = pts
        for k, (lb, ub) in enumerate(pre):
            z = h @ chain.weights[k].T + chain.biases[k]
            assert bool((z >= lb[:, None] - 1e-9).all() & (z <= ub[:, None] + 1e-9).all())
            h = np.maximum(z, 0)
        logits = h @ chain.weights[-1].T + chain.biases[-1]
        rows = np.arange(len(pred))
        real = logits[rows, :, pred][:, :, None] - logits  # [B, n, K] sampled margins
        mb = margin_bounds(chain, lo, hi, pred, pre)
        assert bool(np.isinf(mb[rows, pred]).all())
        real[rows, :, pred] = np.inf
        assert bool((mb[:, None, :] <= real + 1e-9).all())  # sound on every sampled point
        old = np.stack([interval_margins(chain, lo[i], hi[i], pred[i]) for i in rows])
        old[rows, pred] = np.inf
        assert bool((mb >= old - 1e-9).all())  # never looser than the former interval margins
    if which != "cnn":  # tighter where it matters: fewer unstable ReLUs after the first layer
        lo, hi = _boxes(model, x, 0.02 if which == "digits-mlp" else 0.1)
        tight, loose = (
            unstable_counts(linear_bounds(chain, lo, hi)),
            unstable_counts(chain.bounds(lo, hi)[:-1]),
        )
        assert (tight[:, 0] == loose[:, 0]).all() and tight[:, 1:].sum() < loose[:, 1:].sum()


def _old_verify(chain: Any, lo: np.ndarray, hi: np.ndarray, c: int, time_limit: float) -> int:
    """The former ``milp.verify``: interval big-M bounds, classes not proven by interval
    arithmetic solved to optimality (most dangerous first), no cutoff, no attack."""
    ibp = interval_margins(chain, lo, hi, c)
    ibp[c] = np.inf
    problem, status = None, ROBUST
    for j in np.argsort(ibp):
        if ibp[j] > 1e-6:
            break
        problem = problem or Problem.build(chain, lo, hi, pre=chain.bounds(lo, hi)[:-1])
        spec = -np.eye(len(ibp))[j]
        spec[c] += 1.0
        low, best, _ = problem.minimize(spec, time_limit)
        if best < 0:
            return COUNTEREXAMPLE
        if low <= 1e-6:
            status = UNDECIDED
    return status


@pytest.mark.parametrize(
    ("n", "eps_list"),
    [(12, (0.01, 0.03)), pytest.param(24, (0.02, 0.04), marks=pytest.mark.slow)],
)
def test_verdicts_equal_former_formulation_and_are_sound(
    digits: Any, n: int, eps_list: tuple[float, ...]
) -> None:
    """Old = new verdicts on a naturally trained digits MLP (where interval bounds are loose); a
    "robust" survives PGD-100x5 and sampled points; counterexamples are real points of the box.
    At 0.03 the bounds leave classes that only the MILP proves (stage SOLVER, ROBUST)."""
    model = models.create("digits-mlp", {"hidden": 32})
    chain = relu_chain(model)
    x, y, ids = digits.x[:n], digits.y[:n], digits.ids[:n]
    with torch.no_grad():
        pred = model.logits(x).argmax(1).numpy()
    stages = set()
    for eps in eps_list:
        lo, hi = _boxes(model, x, eps)
        old = np.array([_old_verify(chain, lo[i], hi[i], int(pred[i]), 20.0) for i in range(n)])
        rng = ExampleRNG.from_seed(0, ids)
        new = decide(model, chain, x, pred, eps, 20.0, rng=rng)
        no_attack = decide(model, chain, x, pred, eps, 20.0, attack_steps=0)
        both = (old != UNDECIDED) & (new["status"] != UNDECIDED)
        assert both.all()  # nothing times out at these radii
        np.testing.assert_array_equal(new["status"], old)
        np.testing.assert_array_equal(no_attack["status"], old)
        assert set(np.unique(no_attack["stage"])) <= {BOUNDS, SOLVER}
        stages |= {(int(a), int(b)) for a, b in zip(new["status"], new["stage"], strict=True)}
        assert (new["stage"][new["status"] == COUNTEREXAMPLE] != BOUNDS).all()
        # the certifier reports the same verdicts
        cert = MILPVerifier(eps=eps, time_limit=20).certify(model, x, y, rng=rng)
        np.testing.assert_array_equal(cert.extra["milp_status"].numpy(), old)
        assert bool((cert.radius[torch.from_numpy(old == ROBUST)] == eps).all())
        # robust: a strong PGD on the predicted class never succeeds, nor do sampled points
        robust = np.flatnonzero(new["status"] == ROBUST)
        assert len(robust) > n // 2 and (new["margin_lb"][robust] > 0).all()
        pgd = attacks.create("pgd", {"steps": 100, "restarts": 5})
        keep = torch.from_numpy(robust)
        adv = pgd(model, x[keep], torch.from_numpy(pred[robust]), ThreatModel("inf", eps),
                  rng=ExampleRNG.from_seed(7, ids[keep]))  # fmt: skip
        assert not bool(adv.success.any())
        pts = _samples(lo[robust], hi[robust], 200, seed=1).reshape(-1, 1, 8, 8)
        with torch.no_grad():
            p = model.logits(torch.from_numpy(pts).float()).argmax(1).numpy()
        assert (p == np.repeat(pred[robust], 200)).all()
        # counterexamples: inside the box; the attack's ones fool the model's own forward pass,
        # the solver's have a negative margin in the float64 chain
        for out in (new, no_attack):
            for i in np.flatnonzero(out["status"] == COUNTEREXAMPLE):
                xc = out["x_cex"][i]
                assert bool(np.all((xc >= lo[i]) & (xc <= hi[i])))
                z, _ = chain.forward(xc)
                assert (z[pred[i]] - z < 0).any()
                if out["stage"][i] == ATTACK:
                    with torch.no_grad():
                        zt = model.logits(torch.from_numpy(xc).float().view(1, 1, 8, 8))
                    assert int(zt.argmax()) != pred[i]
    # every stage decided something: bounds and solver proofs, attack counterexamples
    assert {(ROBUST, BOUNDS), (ROBUST, SOLVER), (COUNTEREXAMPLE, ATTACK)} <= stages


def test_stage_parameters_are_checked(digits: Any) -> None:
    from robustlab.core.errors import ConfigError

    model = models.create("digits-mlp", {"hidden": 32})
    x, y = digits.x[:2], digits.y[:2]
    rng = ExampleRNG.from_seed(0, digits.ids[:2])
    for bad in ({"attack_steps": -1}, {"attack_restarts": 0}, {"attack_steps": 1.5}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            MILPVerifier(eps=0.01, **bad).certify(model, x, y, rng=rng)
    cert = MILPVerifier(eps=0.01, attack_steps=0).certify(model, x, y, rng=rng)
    assert cert.pred.shape == (2,) and not bool(cert.abstained.any())
