"""Interval bound propagation: soundness on random and trained nets, a reference, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.attacks.base import MarginMisclassified, Targeted
from robustlab.certify.ibp import IntervalBounds, interval_bounds, margin_bounds
from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import attacks, certifiers, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Domain, ThreatModel
from robustlab.models import TorchClassifier
from robustlab.testing import check_certifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 1e-4


class Residual(nn.Module):
    """A small residual CNN: conv -> BN -> ReLU -> (x + conv(x)) -> avg-pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 16, 10)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.stem(x)
        h = h + self.branch(h)
        h = torch.relu(self.pool(h) * 0.5 - 0.1)
        return self.fc(h.reshape(h.size(0), -1))


def _random_nets() -> dict[str, TorchClassifier]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 20), nn.Tanh(),
                        nn.Linear(20, 10))  # fmt: skip
    cnn = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(6, 8, 3), nn.Sigmoid(), nn.Flatten(),
                        nn.Linear(32, 10))  # fmt: skip
    res = Residual()
    for net in (cnn, res):  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(-1.5, 1.5)
    dom = Domain(0.0, 1.0, (1, 8, 8))
    return {
        "mlp": TorchClassifier(mlp, 10, dom),
        "cnn-norm": TorchClassifier(cnn, 10, dom, mean=[0.3], std=[0.4]),
        "residual": TorchClassifier(res, 10, dom, mean=[0.5], std=[0.25]),
    }


@pytest.fixture(scope="module")
def digits() -> Any:
    return datasets.get("digits")(split="test")


NETS = _random_nets()


def _nets(name: str) -> Any:
    return NETS[name] if name in NETS else models.create(name)


def _assert_inside(model: Any, pts: torch.Tensor, lb: torch.Tensor, ub: torch.Tensor) -> None:
    with torch.no_grad():
        z = model.logits(pts)
    assert bool((z >= lb - TOL).all()), float((lb - z).max())
    assert bool((z <= ub + TOL).all()), float((z - ub).max())


@pytest.mark.parametrize("name", ["mlp", "cnn-norm", "residual", "digits-mlp", "digits-cnn"])
@pytest.mark.parametrize("eps", [0.02, 0.1])
def test_sampled_and_attacked_points_stay_inside_bounds(name: str, eps: float, digits: Any) -> None:
    model = _nets(name)
    x, y = digits.x[:48], digits.y[:48]
    lb, ub = interval_bounds(model, x, eps)
    assert bool((lb <= ub).all())
    threat = ThreatModel("inf", eps)
    rng = ExampleRNG.from_seed(1, torch.arange(48 * 8))
    xs = x.repeat(8, 1, 1, 1)
    corners = torch.where(rng.uniform(1, 8, 8) < 0.5, xs - eps, xs + eps)  # vertices of the box
    pts = torch.cat(
        [threat.sample(xs, model.domain, rng.uniform(1, 8, 8)), model.domain.clip(corners)]
    )
    _assert_inside(model, pts, lb.repeat(16, 1), ub.repeat(16, 1))
    # PGD pushing each logit up (targeted) and the true logit down (margin), within the ball
    pgd = attacks.create("pgd", {"steps": 10, "early_stop": False})
    for goal, target in ((MarginMisclassified(), y), (Targeted(), (y + 3) % 10)):
        adv = pgd(
            model, x, target, threat, goal=goal, rng=ExampleRNG.from_seed(2, torch.arange(48))
        )
        assert float((adv.x_adv - x).abs().max()) <= eps + 1e-6
        _assert_inside(model, adv.x_adv, lb, ub)


def _reference_bounds(model: TorchClassifier, x: torch.Tensor, eps: float) -> np.ndarray:
    """Textbook IBP in float64 numpy for Flatten/Linear/ReLU chains: W+ lo + W- hi + b."""
    lo = np.clip(x.flatten(1).double().numpy() - eps, 0, 1)
    hi = np.clip(x.flatten(1).double().numpy() + eps, 0, 1)
    for m in model.module.modules():
        if isinstance(m, nn.Linear):
            w, b = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
            wp, wn = np.maximum(w, 0), np.minimum(w, 0)
            lo, hi = lo @ wp.T + hi @ wn.T + b, hi @ wp.T + lo @ wn.T + b
        elif isinstance(m, nn.ReLU):
            lo, hi = np.maximum(lo, 0), np.maximum(hi, 0)
    return np.stack([lo, hi])


def test_matches_textbook_reference(digits: Any) -> None:
    model = models.create("digits-mlp")
    x = digits.x[:64]
    lb, ub = interval_bounds(model, x, 0.03)
    ref = _reference_bounds(model, x, 0.03)
    np.testing.assert_allclose(lb.double().numpy(), ref[0], atol=1e-4)
    np.testing.assert_allclose(ub.double().numpy(), ref[1], atol=1e-4)


def test_exact_on_one_linear_layer(digits: Any) -> None:
    """For one affine layer the IBP box is the optimal box: the best corner attains each bound."""
    torch.manual_seed(1)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    model = TorchClassifier(lin, 10, Domain(0.0, 1.0, (1, 8, 8)))
    x, eps = digits.x[:16], 0.05
    lb, ub = interval_bounds(model, x, eps)
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    w = lin[1].weight.view(1, 10, 1, 8, 8)
    best_hi = torch.where(w > 0, hi[:, None], lo[:, None])  # [B, K, 1, 8, 8]
    z_hi = model.logits(best_hi.flatten(0, 1)).view(16, 10, 10).diagonal(dim1=1, dim2=2)
    torch.testing.assert_close(z_hi, ub, atol=1e-5, rtol=0)


def test_margin_elision_is_sound_and_tighter(digits: Any) -> None:
    model = models.create("digits-mlp")
    x, eps = digits.x[:64], 0.02
    pred = model.logits(x).argmax(1)
    m = margin_bounds(model, x, eps, pred)
    lb, ub = interval_bounds(model, x, eps)
    naive = (lb.gather(1, pred[:, None]) - ub).scatter(1, pred[:, None], 0.0)
    assert bool((m >= naive - 1e-5).all()) and float((m - naive).mean()) > 0
    pts = ThreatModel("inf", eps).sample(x.repeat(8, 1, 1, 1), model.domain,
                                         ExampleRNG.from_seed(3, torch.arange(512)).uniform(1, 8, 8))  # fmt: skip
    with torch.no_grad():
        z = model.logits(pts)
    actual = z.gather(1, pred.repeat(8)[:, None]) - z
    assert bool((actual >= m.repeat(8, 1) - TOL).all())


def test_certifier_contract_and_monotone_in_eps(digits: Any) -> None:
    model = models.create("digits-mlp")
    x, y = digits.x[:64], digits.y[:64]
    cert = check_certifier(IntervalBounds(eps=0.01), model, x, y)
    assert int((cert.radius > 0).sum()) > 20
    rng = ExampleRNG.from_seed(0, digits.ids)
    acc = [
        float(((c.pred == digits.y) & (c.radius >= e)).float().mean())
        for e in (0.002, 0.01, 0.03)
        for c in [certifiers.create("ibp", {"eps": e}).certify(model, digits.x, digits.y, rng=rng)]
    ]
    assert acc[0] >= acc[1] >= acc[2] and acc[0] > 0.8
    clean = float((model.logits(digits.x).argmax(1) == digits.y).float().mean())
    assert acc[0] <= clean


def test_bad_input(digits: Any) -> None:
    x, y = digits.x[:4], digits.y[:4]
    rng = ExampleRNG.from_seed(0, torch.arange(4))
    with pytest.raises(CapabilityError, match="smoothing"):
        IntervalBounds(eps=0.1).certify(models.create("digits-logreg"), x, y, rng=rng)
    for eps in (0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="eps"):
            IntervalBounds(eps=eps).certify(models.create("digits-mlp"), x, y, rng=rng)
    gelu = TorchClassifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.GELU(),
                                         nn.Linear(8, 10)), 10, Domain(0, 1, (1, 8, 8)))  # fmt: skip
    with pytest.raises(ConfigError, match=r"GELU.*smoothing"):
        IntervalBounds(eps=0.1).certify(gelu, x, y, rng=rng)

    class Branchy(nn.Module):
        def forward(self, x):  # type: ignore[no-untyped-def]
            return x.flatten(1)[:, :10] if x.sum() > 0 else -x.flatten(1)[:, :10]

    with pytest.raises(ConfigError, match="trace.*smoothing"):
        IntervalBounds(eps=0.1).certify(TorchClassifier(Branchy(), 10), x, y, rng=rng)


def test_ibp_training_gives_certified_models(digits: Any) -> None:
    from robustlab.defenses.ibp_training import ibp_loss, schedule
    from robustlab.training.api import train

    assert [schedule(s, 10, 2, 4) for s in (0, 1, 2, 3, 5, 9)] == [0, 0, 0.25, 0.5, 1, 1]
    rng = ExampleRNG.from_seed(0, digits.ids)
    acc = {}
    for name in ("digits-mlp-ibp", "digits-cnn-ibp", "digits-mlp"):
        model = models.create(name)
        cert = IntervalBounds(eps=0.1).certify(model, digits.x, digits.y, rng=rng)
        clean = float((model.logits(digits.x).argmax(1) == digits.y).float().mean())
        acc[name] = (clean, float(((cert.pred == digits.y) & (cert.radius > 0)).float().mean()))
    assert acc["digits-mlp"][1] == 0.0  # naturally trained: nothing certified at eps 0.1
    for name in ("digits-mlp-ibp", "digits-cnn-ibp"):
        assert acc[name][0] > 0.85 and acc[name][1] > 0.5, acc
    # the IBP loss upper-bounds the natural loss at kappa = 0 and equals it at eps = 0
    net = models.create("digits-mlp-ibp").module
    x, y = digits.x[:64], digits.y[:64]
    dom = Domain(0.0, 1.0, (1, 8, 8))
    with torch.no_grad():
        nat = float(ibp_loss(net, x, y, 0.0, 1.0, dom))
        assert float(ibp_loss(net, x, y, 0.0, 0.0, dom)) == pytest.approx(nat, abs=1e-4)
        assert float(ibp_loss(net, x, y, 0.1, 0.0, dom)) >= nat
    # the registered models are `trained` specs of the `ibp` trainer (provenance attached)
    prov = models.create("digits-mlp-ibp").provenance
    assert prov["spec"]["trainer"]["name"] == "ibp" and prov["epochs_run"] == 30
    assert prov["train_examples"] == len(datasets.get("digits")(split="train"))  # holdout 0
    base = {"name": "mlp", "params": {"side": 8}}
    for bad, match in ((dict(kappa_end=2.0), "kappa_end"), (dict(eps=0.0), "eps")):
        with pytest.raises(ConfigError, match=match):
            train({"base": base, "trainer": {"name": "ibp", "params": bad}, "epochs": 1})
    with pytest.raises(ConfigError, match="eps"):
        models.create("digits-mlp-ibp", {"eps": 0.0})


@pytest.mark.parametrize("name", ["cnn-norm", "residual", "digits-cnn"])
def test_fused_cached_path_equals_plain_rules(name: str, digits: Any) -> None:
    """Without autograd, Conv+BN folding, ReLU/MaxPool reordering and cached weights are used;
    under autograd every layer runs its plain rule: the bounds must agree (up to float rounding)."""
    model = _nets(name)
    x = digits.x[:16]
    with torch.no_grad():
        lo, hi = interval_bounds(model, x, 0.03)
    with torch.enable_grad():
        lo_ref, hi_ref = interval_bounds(model, x, 0.03)
    assert torch.allclose(lo, lo_ref.detach(), atol=1e-5) and torch.allclose(
        hi, hi_ref.detach(), atol=1e-5
    )
    module = model.module
    conv = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    saved = conv.weight.detach().clone()
    try:
        with torch.no_grad():
            conv.weight.mul_(0.5)  # in-place update: the cached derived weights must follow
            lo2, hi2 = interval_bounds(model, x, 0.03)
        with torch.enable_grad():
            lo2_ref, _ = interval_bounds(model, x, 0.03)
        assert torch.allclose(lo2, lo2_ref.detach(), atol=1e-5) and not torch.allclose(lo2, lo)
    finally:
        with torch.no_grad():
            conv.weight.copy_(saved)


@pytest.mark.parametrize("name", ["cnn-norm", "residual", "digits-cnn"])
def test_chunked_propagation_equals_one_piece(name: str, digits: Any) -> None:
    """interval_bounds / margin_bounds propagate cache-sized chunks of examples; every rule is per
    example, so the bounds equal those of one piece (up to the convolution kernels' rounding)."""
    import robustlab.certify.ibp as ibp

    model = _nets(name)
    x = digits.x[:100]
    pred = model.logits(x).argmax(1)
    assert 1 <= ibp.chunk_rows(model.module, x, 1 << 15) < 100  # small budget: several chunks
    saved = ibp.CHUNK_BYTES
    try:
        ibp.CHUNK_BYTES = 1 << 15
        lo, hi = interval_bounds(model, x, 0.03)
        m = margin_bounds(model, x, 0.03, pred)
        ibp.CHUNK_BYTES = 1 << 40  # one piece
        lo1, hi1 = interval_bounds(model, x, 0.03)
        m1 = margin_bounds(model, x, 0.03, pred)
    finally:
        ibp.CHUNK_BYTES = saved
    for a, b in ((lo, lo1), (hi, hi1), (m, m1)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
