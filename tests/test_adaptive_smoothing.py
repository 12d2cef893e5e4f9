"""S17 adaptive smoothing (Bai et al., 2024): the ``mixed`` model and the ``mixer`` trainer on real
data, attacked through the whole mixture.

Invariants: alpha 0 / 1 give exactly the endpoints' log-softmax; the output is the seed's formula
computed another way; the mixture is differentiable end to end (the adapter contract); the mixer
trainer changes only the mixing network. Claims (Fashion-MNIST: a standard and a PGD-AT SmallCNN
trained here): the mixture keeps most of the standard model's clean accuracy and most of the
robust model's robust accuracy under PGD, APGD-CE/DLR and Square through the whole mixture. The
seed's second claim (the learned mixer beats fixed alpha) was not reproduced at this scale: the
learned mixer lies on or below the fixed-alpha curve (docs/defences.md); it is trained and
attacked here, not asserted to win.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import robustlab
from robustlab.attacks.apgd import APGD
from robustlab.attacks.pgd import PGD
from robustlab.attacks.square import Square
from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models, trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel
from robustlab.testing.adapter import check_adapter
from robustlab.testing.attack import check_attack

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = {"name": "digits", "params": {"split": "train"}}


def digits_trained(trainer: str, **params: Any) -> dict[str, Any]:
    return {"name": "trained", "params": {
        "base": {"name": "small-cnn", "params": {"side": 8}}, "data": DIGITS,
        "trainer": {"name": trainer, "params": {"lr": 3e-3, **params}},
        "epochs": 5, "holdout": 128,
    }}  # fmt: skip


STD, ROB = digits_trained("standard"), digits_trained("pgd-at", eps=0.2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("smoothing-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTLAB_CACHE", str(root))
        yield root


def mixed(alpha: float, **params: Any) -> Any:
    return models.create("mixed", {"standard": STD, "robust": ROB, "alpha": alpha, **params})


def test_endpoints_and_formula(cache: Any) -> None:
    x = datasets.create("digits", {"split": "test"}).x[:64]
    g, h = models.create(STD["name"], STD["params"]), models.create(ROB["name"], ROB["params"])
    with torch.no_grad():
        zg, zh = g.logits(x), h.logits(x)
        fixed = mixed(0.0)
        assert torch.allclose(fixed.logits(x), zg.log_softmax(1), atol=1e-6)
        fixed.module.alpha = 1.0
        assert torch.allclose(fixed.logits(x), zh.log_softmax(1), atol=1e-6)
        # the seed's formula, computed directly in float64 (with logit scales)
        a, sg, sh = 0.3, 1.5, 3.0
        ref = ((1 - a) * (sg * zg.double()).softmax(1) + a * (sh * zh.double()).softmax(1)).log()
        fixed.module.alpha, fixed.module.std_scale, fixed.module.rob_scale = a, sg, sh
        got = fixed.logits(x)
        assert torch.allclose(got.double(), ref, atol=1e-5)
        assert torch.allclose(got.exp().sum(1), torch.ones(64), atol=1e-5)  # a distribution
        learned = mixed(0.7, mixer="learned")
        _, alpha = learned.module.mix(x)
        assert alpha.shape == (64, 1) and abs(float(alpha.mean()) - 0.7) < 0.1  # starts at alpha
    check_adapter(fixed, x[:16])  # finite input gradients through both models
    check_adapter(learned, x[:16])
    assert learned.undefended.fingerprint() == g.fingerprint()  # transfer's default source
    with pytest.raises(ConfigError, match="alpha"):
        models.create("mixed", {"standard": STD, "robust": ROB, "alpha": 1.5})
    with pytest.raises(ConfigError, match="learned mixer"):
        mixed(0.0, mixer="learned")
    with pytest.raises(ConfigError, match="input domain"):
        models.create("mixed", {"standard": STD, "robust": {"name": "small-cnn"}})


def test_mixer_trainer_trains_only_the_mixing_network(cache: Any) -> None:
    base = {"name": "mixed", "params": {"standard": STD, "robust": ROB, "mixer": "learned"}}
    before = models.create(base["name"], base["params"]).module.state_dict()
    clf = robustlab.train({"base": base, "data": DIGITS, "epochs": 1, "holdout": 64,
                           "trainer": {"name": "mixer", "params": {"eps": 0.2, "steps": 3}}})  # fmt: skip
    after = clf.module.state_dict()
    for k, v in before.items():
        same = torch.equal(v, after[k])
        assert same != k.startswith("mixer."), k  # bases bit-identical, mixer changed
    assert clf.provenance["history"][0]["pgd_acc"] is not None  # evaluated through the mixture
    with pytest.raises(ConfigError, match="mixer: learned"):
        robustlab.train({"base": STD, "data": DIGITS, "epochs": 1,
                         "trainer": {"name": "mixer", "params": {"eps": 0.2}}})  # fmt: skip
    assert "mixer" in trainers.names()


def robust_union(clf: Any, data: Any, eps: float, square: int = 0) -> tuple[float, float]:
    """Clean accuracy and the accuracy left by the per-example union of PGD-10, APGD-CE and
    APGD-DLR (20 steps each) and, with ``square`` queries, Square -- all through ``clf`` whole."""
    x, y, threat = data.x, data.y, ThreatModel("inf", eps)
    with torch.no_grad():
        clean = float((clf.logits(x).argmax(1) == y).float().mean())
    fooled = torch.zeros(len(y), dtype=torch.bool)
    runs: list[Any] = [PGD(steps=10), APGD(loss="ce", steps=20), APGD(loss="dlr", steps=20)]
    runs += [Square(n_queries=square)] if square else []
    for attack in runs:
        fooled |= attack(clf, x, y, threat, rng=ExampleRNG.from_seed(0, data.ids)).success.cpu()
    return clean, 1 - float(fooled.float().mean())


def test_fixed_mixture_keeps_clean_and_robust_accuracy_on_digits(cache: Any) -> None:
    """S17's claim at small scale with a fixed alpha (digits, Linf 0.2, where the PGD-AT model
    loses a few points of clean accuracy): the mixture's clean accuracy is at least the robust
    model's, its robust accuracy close to the robust model's and far above the standard one's."""
    te = datasets.create("digits", {"split": "test"})
    g, h = models.create(STD["name"], STD["params"]), models.create(ROB["name"], ROB["params"])
    (cg, rg), (ch, rh), (cm, rm) = (robust_union(m, te, 0.2) for m in (g, h, mixed(0.9)))
    print(f"std {cg:.3f}/{rg:.3f} robust {ch:.3f}/{rh:.3f} mixed(0.9) {cm:.3f}/{rm:.3f}")
    # seeds 0 / 1 / 2 (std, robust, mixed): 0.969/0.006, 0.928/0.356, 0.944/0.317; 0.953/0.025,
    # 0.944/0.364, 0.950/0.325; 0.975/0.003, 0.947/0.333, 0.956/0.306
    assert cg >= ch and rh >= rg + 0.3  # the standard model is the accurate one, not robust
    assert cm >= ch and rm >= rh - 0.08 and rm >= rg + 0.25, (cm, rm)


FASHION = {"name": "fashion-mnist", "params": {"split": "train", "limit": 2000}}


def fashion_trained(trainer: str, seed: int, **params: Any) -> dict[str, Any]:
    return {"name": "trained", "params": {
        "base": {"name": "small-cnn", "params": {"side": 28}}, "data": FASHION,
        "trainer": {"name": trainer, "params": {"lr": 3e-3, **params}},
        "epochs": 3, "holdout": 128, "seed": seed,
    }}  # fmt: skip


@pytest.mark.slow
def test_adaptive_smoothing_trade_off_on_fashion_mnist(cache: Any) -> None:
    """S17 on Fashion-MNIST (2,000 training images, 3 epochs, Linf 0.1; 300 test images), attacks
    (PGD, APGD-CE/DLR) through the whole mixture: the fixed mixture at alpha 0.7 keeps the clean
    accuracy of the standard model within 2 points and most of the robust model's robust accuracy;
    the learned mixture lies between the endpoints too. Measured (seed 0, clean / union, with
    Square-100 on the mixtures, which changed nothing): standard 0.813 / 0.200, robust 0.773 /
    0.590, alpha 0.7 0.807 / 0.463, learned 0.813 / 0.370: the learned mixer does NOT beat the
    fixed-alpha curve at this scale (docs/defences.md). ~93 s on the 2-core machine (load ~5)."""
    eps, te = 0.1, datasets.create("fashion-mnist", {"split": "test", "limit": 300})
    std, rob = fashion_trained("standard", 0), fashion_trained("pgd-at", 0, eps=eps)
    g, h = models.create(std["name"], std["params"]), models.create(rob["name"], rob["params"])
    fixed = models.create("mixed", {"standard": std, "robust": rob, "alpha": 0.7})
    learned = robustlab.train({
        "base": {"name": "mixed", "params": {"standard": std, "robust": rob, "mixer": "learned"}},
        "data": FASHION, "trainer": {"name": "mixer", "params": {"eps": eps, "steps": 5}},
        "epochs": 2, "holdout": 128,
    })  # fmt: skip
    (cg, rg), (ch, rh) = robust_union(g, te, eps), robust_union(h, te, eps)
    (c7, r7), (cl, rl) = (robust_union(m, te, eps) for m in (fixed, learned))
    print(f"std {cg:.3f}/{rg:.3f} rob {ch:.3f}/{rh:.3f} 0.7 {c7:.3f}/{r7:.3f} "
          f"learned {cl:.3f}/{rl:.3f}")  # fmt: skip
    assert cg >= ch + 0.025 and rh >= rg + 0.3  # the trade-off the mixture should soften
    assert c7 >= ch + 0.02 and c7 >= cg - 0.02  # clean near the standard model's
    assert r7 >= rg + 0.2 and r7 >= rh - 0.2  # robust near the robust model's (0.463, 0.590)
    assert cl >= ch + 0.02 and rl >= rg + 0.15


def test_attacks_go_through_the_whole_mixture(cache: Any) -> None:
    te = datasets.create("digits", {"split": "test"})
    x, y, threat = te.x[:48], te.y[:48], ThreatModel("inf", 0.2)
    learned = mixed(0.7, mixer="learned")
    for attack in (PGD(steps=10), APGD(loss="dlr", steps=10)):  # ball, domain, determinism, ...
        check_attack(attack, learned, x, y, threat)
    check_attack(Square(n_queries=100), mixed(0.7), x, y, threat, strength=False)
