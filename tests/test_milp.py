"""Exact MILP verification: brute-force reference, soundness, the IBP <= exact <= PGD sandwich."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
from scipy import optimize
from torch import nn

from robustlab.certify.ibp import IntervalBounds, interval_bounds
from robustlab.certify.milp import (
    COUNTEREXAMPLE,
    ROBUST,
    MILPVerifier,
    exact_bounds,
    ibp_tightness,
    relu_chain,
    verify,
)
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Domain, ThreatModel
from robustlab.models import TorchClassifier
from robustlab.testing import check_certifier


@pytest.fixture(scope="module")
def digits() -> Any:
    return datasets.get("digits")(split="test")


def _toy(seed: int) -> TorchClassifier:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3))
    for p in net.parameters():
        p.data = torch.randn(p.shape, generator=g)
    return TorchClassifier(net, 3, Domain(-1.0, 1.0, (2,)))


def _enumerate_min(chain: Any, lo: np.ndarray, hi: np.ndarray, spec: np.ndarray) -> float:
    """min spec @ f(x) over the box by enumerating all 2^7 activation patterns (one LP each)."""
    n1 = len(chain.biases[0])
    best = np.inf
    for pat in itertools.product([0, 1], repeat=n1 + len(chain.biases[1])):
        d1, d2 = np.diag(pat[:n1]), np.diag(pat[n1:])
        (w1, w2, w3), (b1, b2, b3) = chain.weights, chain.biases
        a2, c2 = w2 @ d1 @ w1, w2 @ d1 @ b1 + b2  # z2 = a2 x + c2 on this pattern
        obj, const = spec @ w3 @ d2 @ a2, spec @ (w3 @ d2 @ c2 + b3)
        s1, s2 = 2 * np.array(pat[:n1]) - 1, 2 * np.array(pat[n1:]) - 1  # sign constraints
        a_ub = np.vstack([-s1[:, None] * w1, -s2[:, None] * a2])
        b_ub = np.concatenate([s1 * b1, s2 * c2])
        res = optimize.linprog(obj, A_ub=a_ub, b_ub=b_ub, bounds=list(zip(lo, hi, strict=True)))
        if res.status == 0:
            best = min(best, res.fun + const)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_pattern_enumeration_on_2d_toy(seed: int) -> None:
    model = _toy(seed)
    chain = relu_chain(model)
    x = torch.tensor([[0.1, -0.2]])
    z = model.logits(x).detach()
    c = int(z.argmax())
    for eps in (0.05, 0.3, 0.8):
        lo, hi = (
            np.clip(x[0].double().numpy() - eps, -1, 1),
            np.clip(x[0].double().numpy() + eps, -1, 1),
        )
        exact = [
            _enumerate_min(chain, lo, hi, np.eye(3)[c] - np.eye(3)[j]) for j in range(3) if j != c
        ]
        status, low, xc = verify(chain, lo, hi, c, time_limit=10)
        assert status == (ROBUST if min(exact) > 1e-6 else COUNTEREXAMPLE)
        if status == ROBUST:
            assert 0 < low <= min(exact) + 1e-6  # proven bound (interval bound for skipped classes)
        else:  # the counterexample is in the box and really changes the prediction
            assert np.all(xc >= lo - 1e-9) and np.all(xc <= hi + 1e-9)
            assert int(model.logits(torch.tensor(xc, dtype=torch.float32)[None]).argmax()) != c
        if eps != 0.3:
            continue
        # exact logit box vs enumeration and a dense grid
        lb, ub = exact_bounds(model, x, eps)
        for k in range(3):
            assert float(lb[0, k]) == pytest.approx(
                _enumerate_min(chain, lo, hi, np.eye(3)[k]), abs=1e-5
            )
        g = torch.stack(torch.meshgrid(*[torch.linspace(a, b, 201) for a, b in zip(lo, hi, strict=True)],
                                       indexing="ij"), -1).view(-1, 2).float()  # fmt: skip
        zg = model.logits(g).detach().double()
        assert bool((zg >= lb - 1e-4).all() & (zg <= ub + 1e-4).all())
        assert float((zg.amin(0) - lb[0]).max()) < 0.05 and float((ub[0] - zg.amax(0)).max()) < 0.05


def test_relu_chain_reproduces_cnn_with_normalization(digits: Any) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 10))  # fmt: skip
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    clf = TorchClassifier(net, 10, Domain(0, 1, (1, 8, 8)), mean=[0.4], std=[0.3])
    chain = relu_chain(clf)
    z = np.stack([chain.forward(v)[0] for v in digits.x[:8].flatten(1).double().numpy()])
    np.testing.assert_allclose(z, clf.logits(digits.x[:8]).detach().numpy(), atol=1e-4)
    bad = TorchClassifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Sigmoid(), nn.Linear(8, 10)),
                          10, Domain(0, 1, (1, 8, 8)))  # fmt: skip
    with pytest.raises(ConfigError, match=r"Sigmoid.*'ibp' or 'smoothing'"):
        relu_chain(bad)


def test_sandwich_ibp_exact_pgd_on_small_mlp(digits: Any) -> None:
    """IBP-certified <= exact robust accuracy <= accuracy under PGD (digits 64-32-32-10 MLP)."""
    x, y, ids = digits.x[:40], digits.y[:40], digits.ids[:40]
    for name, params, eps_list in (("digits-mlp", {"hidden": 32}, (0.005, 0.01)),
                                   ("digits-mlp-ibp", {}, (0.05, 0.1))):  # fmt: skip
        model = models.create(name, params)
        for eps in eps_list:
            rng = ExampleRNG.from_seed(0, ids)
            ibp = IntervalBounds(eps=eps).certify(model, x, y, rng=rng)
            milp = MILPVerifier(eps=eps, time_limit=20).certify(model, x, y, rng=rng)
            assert not bool(milp.abstained.any())
            pgd = attacks.create("pgd", {"steps": 40, "restarts": 2})
            adv = pgd(model, x, y, ThreatModel("inf", eps), rng=rng)
            ok_ibp = (ibp.pred == y) & (ibp.radius >= eps)
            ok_milp = (milp.pred == y) & (milp.radius >= eps)
            ok_pgd = ~adv.success
            assert bool((ok_ibp <= ok_milp).all()) and bool((ok_milp <= ok_pgd).all())
            assert int(ok_milp.sum()) > 0
            # nothing in the verified set is misclassified by sampled points either
            keep = ok_milp.nonzero().flatten()
            pts = ThreatModel("inf", eps).sample(x[keep].repeat(16, 1, 1, 1), model.domain,
                                                 ExampleRNG.from_seed(5, torch.arange(16 * len(keep))).uniform(1, 8, 8))  # fmt: skip
            assert bool((model.logits(pts).argmax(1) == y[keep].repeat(16)).all())
            assert bool((model.logits(adv.x_adv[keep]).argmax(1) == y[keep]).all())


def test_contract_and_tightness(digits: Any) -> None:
    model = models.create("digits-mlp-ibp")
    cert = check_certifier(MILPVerifier(eps=0.05), model, digits.x[:16], digits.y[:16])
    assert int((cert.radius > 0).sum()) > 8
    x = digits.x[:2]
    tau = ibp_tightness(model, x, 0.05)
    assert bool(((tau > 0) & (tau <= 1)).all())
    lb, ub = interval_bounds(model, x, 0.05)
    lbs, ubs = exact_bounds(model, x, 0.05)
    assert bool((lbs >= lb.double() - 1e-4).all() & (ubs <= ub.double() + 1e-4).all())


def test_bad_input(digits: Any) -> None:
    rng = ExampleRNG.from_seed(0, torch.arange(2))
    x, y = digits.x[:2], digits.y[:2]
    with pytest.raises(ConfigError, match="time_limit"):
        MILPVerifier(eps=0.1, time_limit=0).certify(models.create("digits-mlp"), x, y, rng=rng)
    with pytest.raises(Exception, match="smoothing"):
        MILPVerifier(eps=0.1).certify(models.create("digits-logreg"), x, y, rng=rng)


def test_report_section_shows_the_sandwich(tmp_path: Any) -> None:
    from robustlab.core.registry import report_sections
    from robustlab.report.build import build_report
    from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite, run_suite
    from robustlab.store import Store

    suite = Suite(
        name="sandwich",
        models=[ModelSpec(name="digits-mlp-ibp", replicates=[0])],
        data=ComponentSpec(name="digits", params={"split": "test", "test_fraction": 0.05}),
        probes=[
            ProbeSpec(kind="certifier", name="ibp", params={"eps": 0.05}, levels=[0.05]),
            ProbeSpec(kind="certifier", name="milp", params={"eps": 0.05}, levels=[0.05]),
            ProbeSpec(kind="attack", name="pgd", params={"steps": 20}, levels=[0.05]),
        ],
    )
    store = Store(str(tmp_path / "store.db"))
    run_id = run_suite(suite, store)
    rows = build_report(store, run_id)["extensions"]["verification"]["data"]["rows"]
    (row,) = rows
    assert row["eps"] == 0.05 and not row["violated"] and row["timeouts"] == 0
    assert row["ibp"] <= row["milp"] <= row["attack"] and row["ibp"] > 0.5
    html = report_sections.get("verification")().render({"rows": rows})
    assert "IBP-certified" in html and "VIOLATED" not in html
    from robustlab.report.build import write_report

    page = write_report(store, run_id, tmp_path / "reports")[0].read_text()
    assert "Verification sandwich" in page and "IBP-certified" in page
