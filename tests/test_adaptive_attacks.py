"""Adaptive attacks on defended models (issue 17, "defences must be judged by adaptive attacks"),
on real digits models: BPDA through a non-differentiable pre-processing, EOT over a randomized one,
transfer attacks from the undefended base. The report-level checks (a real suite run) are in
tests/test_masking_checks.py.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch

from robustlab.attacks.apgd import APGD
from robustlab.attacks.eot import EOT, for_attack
from robustlab.attacks.pgd import PGD
from robustlab.attacks.square import Square
from robustlab.core.errors import ConfigError, DomainError
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel
from robustlab.defenses.preprocess import quantize, resize_pad
from robustlab.testing.adapter import check_adapter
from robustlab.testing.attack import check_attack

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def digits_trained(trainer: str, seed: int = 0, **params: Any) -> dict[str, Any]:
    """A digits CNN trained by ``trainer`` (5 epochs, ~2 s; cached for the module)."""
    return {"name": "trained", "params": {
        "base": {"name": "small-cnn", "params": {"side": 8}},
        "data": {"name": "digits", "params": {"split": "train"}},
        "trainer": {"name": trainer, "params": {"lr": 3e-3, **params}},
        "epochs": 5, "holdout": 128, "seed": seed,
    }}  # fmt: skip


CNN = digits_trained("standard")  # the undefended base


def noise_trained(sigma: float = 0.3, seed: int = 0) -> dict[str, Any]:
    """A digits CNN trained on Gaussian-noise inputs: the base of noisy-input."""
    return digits_trained("noise", seed, sigma=sigma)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("adaptive-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTLAB_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def test_set() -> Any:
    return datasets.create("digits", {"split": "test"})


def robust_acc(target: Any, attack_model: Any, attack: Any, data: Any, eps: float) -> float:
    """Accuracy of ``target`` on ``attack``'s examples crafted on ``attack_model`` (mean of 3
    draws of a randomized target)."""
    res = attack(attack_model, data.x, data.y, ThreatModel("inf", eps),
                 rng=ExampleRNG.from_seed(0, data.ids))  # fmt: skip
    with torch.no_grad():
        accs = [float((target.logits(res.x_adv).argmax(1) == data.y).float().mean())
                for _ in range(3)]  # fmt: skip
    return sum(accs) / 3


def test_quantize_and_resize_pad_against_independent_formulas() -> None:
    x = torch.rand(5, 1, 8, 8)
    q = quantize(x, 4)  # 2 bits: nearest of {0, 1/3, 2/3, 1}
    levels = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0])
    ref = levels[(x.unsqueeze(-1) - levels).abs().argmin(-1)]
    assert torch.allclose(q, ref, atol=1e-6)
    # resize to the full side at offset 0 is the identity; to a smaller side pads with the fill
    gen = torch.Generator().manual_seed(0)
    assert torch.allclose(resize_pad(x, 8, 8, gen), x, atol=1e-5)
    small = resize_pad(x, 4, 4, gen, fill=0.0)
    assert (small == 0).flatten(1).sum(1).min() >= 64 - 16  # 8x8 canvas, at most 4x4 image
    ref4 = torch.nn.functional.interpolate(x, size=4, mode="bilinear", antialias=False)
    placed = small.flatten(1).sort(1).values[:, -16:]  # the 16 image pixels, wherever placed
    assert torch.allclose(placed, ref4.flatten(1).sort(1).values, atol=1e-5)


def test_bpda_breaks_what_plain_pgd_reports_robust(cache: Any, test_set: Any) -> None:
    """BPDA (Athalye et al., 2018): PGD through the rounding's zero gradient does not move (the
    defence looks robust); the same PGD through the identity (BPDA) breaks it."""
    masked = models.create("quantized-input", {"base": CNN, "bpda": False})
    bpda = models.create("quantized-input", {"base": CNN, "bpda": True})
    x = test_set.x[:64].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(masked.logits(x).logsumexp(1).sum(), x)
    assert float(g.abs().max()) == 0.0  # the exact gradient of the step: zero
    with torch.no_grad():  # one forward: same predictions
        assert torch.equal(masked.logits(test_set.x), bpda.logits(test_set.x))
    pgd = PGD(steps=10)
    plain, broken = (robust_acc(masked, m, pgd, test_set, 0.2) for m in (masked, bpda))
    assert plain >= 0.9 and broken <= 0.1, (plain, broken)  # measured 0.947 vs 0.0
    check_attack(APGD(loss="dlr", steps=10), bpda, test_set.x[:24], test_set.y[:24],
                 ThreatModel("inf", 0.2))  # invariants (ball, domain, ...) through BPDA  # fmt: skip
    check_adapter(bpda, test_set.x[:16])


def test_eot_with_one_sample_on_a_deterministic_model_is_plain_pgd(
    cache: Any, test_set: Any
) -> None:
    clf = models.create(CNN["name"], CNN["params"])
    x, y, ids = test_set.x[:96], test_set.y[:96], test_set.ids[:96]
    threat = ThreatModel("inf", 0.1)
    plain = PGD(steps=10)(clf, x, y, threat, rng=ExampleRNG.from_seed(3, ids))
    one = PGD(steps=10)(EOT(clf, 1), x, y, threat, rng=ExampleRNG.from_seed(3, ids))
    assert torch.allclose(plain.x_adv, one.x_adv, atol=1e-6)
    assert torch.equal(plain.success, one.success)
    with torch.no_grad():  # n identical draws average to the model's own log-softmax
        assert torch.allclose(EOT(clf, 4).logits(x), clf.logits(x).log_softmax(1), atol=1e-5)
    assert for_attack(clf, PGD()) is clf  # deterministic models are attacked as they are
    with pytest.raises(ConfigError, match="samples"):
        EOT(clf, 0)


def test_eot_averages_batched_draws_of_a_randomized_model(cache: Any, test_set: Any) -> None:
    noisy = models.create("noisy-input", {"base": noise_trained(), "sigma": 0.3, "seed": 5})
    x = test_set.x[:32]
    view = for_attack(noisy, PGD())
    assert isinstance(view, EOT) and view.samples == 16  # the runner's choice on this model
    assert for_attack(noisy, Square()) is noisy  # black-box attacks query the model itself
    with torch.no_grad():  # reference: the same draws one at a time, averaged in probability
        noisy.module._gen = None
        got = view.logits(x)
        noisy.module._gen = None
        gen = noisy.module._generator(x.device)
        noise = torch.randn((16 * 32, 1, 8, 8), generator=gen).view(16, 32, 1, 8, 8)
        net = noisy.module.net
        probs = torch.stack([net(x + 0.3 * noise[k]).softmax(1) for k in range(16)])
        assert torch.allclose(got, probs.mean(0).log(), atol=1e-5)


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_pgd_without_eot_overestimates_a_randomized_defence(
    cache: Any, test_set: Any, seed: int
) -> None:
    """EOT (Athalye et al., 2018) on Gaussian-noise input pre-processing: PGD on one draw per
    step leaves clearly more accuracy than PGD on the 16-draw expectation (same budget)."""
    noisy = models.create("noisy-input", {"base": noise_trained(seed=seed), "sigma": 0.3,
                                          "seed": seed})  # fmt: skip
    pgd = PGD(steps=10)
    without = robust_acc(noisy, noisy, pgd, test_set, 0.2)
    with_eot = robust_acc(noisy, for_attack(noisy, pgd), pgd, test_set, 0.2)
    print(f"seed {seed}: PGD without EOT {without:.3f}, with EOT {with_eot:.3f}")
    assert without >= with_eot + 0.08, (without, with_eot)  # measured 0.499 vs 0.332 (seed 0)
    res = pgd(for_attack(noisy, pgd), test_set.x, test_set.y, ThreatModel("inf", 0.2),
              rng=ExampleRNG.from_seed(0, test_set.ids))  # fmt: skip
    assert float((res.x_adv - test_set.x).abs().max()) <= 0.2 + 1e-6
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0


def test_transfer_attack_from_the_undefended_base(cache: Any, test_set: Any) -> None:
    """Examples crafted on the undefended CNN fool the BPDA-less quantized model far more than
    white-box PGD on it (which sees zero gradients): the fifth masking check's signal."""
    masked = models.create("quantized-input", {"base": CNN, "bpda": False})
    transfer = attacks.create("transfer")  # source: the target's undefended base
    assert transfer.needs_grad is False and transfer.transfer is True
    x, y = test_set.x, test_set.y
    r = transfer(masked, x, y, ThreatModel("inf", 0.2), rng=ExampleRNG.from_seed(0, test_set.ids))
    t_acc = 1 - float(r.success.float().mean())
    w_acc = robust_acc(masked, masked, PGD(steps=10), test_set, 0.2)
    assert t_acc <= w_acc - 0.3, (t_acc, w_acc)
    check_attack(transfer, masked, x[:24], y[:24], ThreatModel("inf", 0.2), strength=False)
    explicit = attacks.create("transfer", {"source": digits_trained("standard", seed=1),
                                           "attack": {"name": "fgsm"}})  # fmt: skip
    check_attack(explicit, masked, x[:24], y[:24], ThreatModel("inf", 0.1), strength=False)
    with pytest.raises(ConfigError, match="undefended"):
        transfer(models.create(CNN["name"], CNN["params"]), x[:4], y[:4], ThreatModel("inf", 0.1),
                 rng=ExampleRNG.from_seed(0, test_set.ids[:4]))  # fmt: skip
    with pytest.raises(ConfigError, match="no parameter 'stepz'"):
        attacks.create("transfer", {"attack": {"name": "pgd", "params": {"stepz": 3}}})
    fm = models.create("small-cnn", {"side": 28})
    with pytest.raises(DomainError, match="source domain"):
        attacks.create("transfer", {"source": {"name": "small-cnn", "params": {"side": 28}}})(
            masked,
            x[:4],
            y[:4],
            ThreatModel("inf", 0.1),
            rng=ExampleRNG.from_seed(0, test_set.ids[:4]),
        )
    assert fm.domain.shape == (1, 28, 28)


def test_defended_models_reject_bad_parameters(cache: Any) -> None:
    with pytest.raises(ConfigError, match="levels"):
        models.create("quantized-input", {"base": CNN, "levels": 1})
    with pytest.raises(ConfigError, match="sigma"):
        models.create("noisy-input", {"base": CNN, "sigma": -1.0})
    with pytest.raises(ConfigError, match="low"):
        models.create("resize-pad-input", {"base": CNN, "low": 9})
    with pytest.raises(ConfigError, match="base"):
        models.create("noisy-input", {"base": "small-cnn"})
    rp = models.create("resize-pad-input", {"base": CNN, "low": 6})
    assert rp.randomized and rp.eot == 16 and rp.defence["name"] == "resize-pad-input"
    x = datasets.create("digits", {"split": "test"}).x[:8]
    copy = pickle.loads(pickle.dumps(rp))  # for process engines: the random stream restarts
    with torch.no_grad():
        assert copy.logits(x).shape == (8, 10) and torch.isfinite(copy.logits(x)).all()
