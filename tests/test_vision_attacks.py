"""Vision attacks against references: the papers' formulas, hand-written one-example transcriptions
and torchattacks on the same model, inputs and epsilon; patch/worst-of-k contracts; bad input."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from robustlab.attacks.apgd import checkpoints, dlr_loss
from robustlab.attacks.square import _bumps, p_selection
from robustlab.core.errors import CapabilityError, ConfigError, DomainError, UnknownComponentError
from robustlab.core.registry import attacks, datasets, models, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel
from robustlab.testing import check_attack

N = 100
LINF = ThreatModel("inf", 0.1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cnn() -> Any:
    return models.create("digits-cnn")


@pytest.fixture(scope="module")
def logreg() -> Any:
    return models.create("digits-logreg")


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    d = datasets.get("digits")(split="test")
    return d.x[:N], d.y[:N]


def rng(n: int, seed: int = 0) -> ExampleRNG:
    return ExampleRNG.from_seed(seed, torch.arange(n))


def robust(model: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.logits(x).argmax(1) == y


def test_apgd_checkpoints_match_paper() -> None:
    # p_0=0, p_1=0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = ceil(p_j N)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_dlr_loss_by_hand() -> None:
    z = torch.tensor([[3.0, 1.0, 0.5, 0.0, -1.0]])
    y = torch.tensor([0])
    # -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3) = -(3 - 1) / (3 - 0.5)
    assert dlr_loss(z, y).item() == pytest.approx(-2 / 2.5)
    # targeted, t = 3: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(3 - 0) / (3 - 0.25)
    assert dlr_loss(z, y, torch.tensor([3])).item() == pytest.approx(-3 / 2.75)


def test_square_schedule_and_l2_pattern() -> None:
    assert p_selection(0.8, 5, 10000) == 0.8 and p_selection(0.8, 30, 10000) == 0.4
    assert p_selection(0.8, 9000, 10000) == 0.8 / 512
    assert p_selection(0.8, 250, 1000) == 0.8 / 64  # rescaled to the query budget
    b = _bumps(5)
    assert b.norm().item() == pytest.approx(1.0)
    assert (b[:2] > 0).all() and (b[2:] < 0).all()  # +bump on top, -bump below


def test_step_ll_matches_hand_formula(cnn: Any, data: Any) -> None:
    x, y = data
    res = attacks.create("step_ll")(cnn, x, y, LINF, rng=rng(N))
    xg = x.clone().requires_grad_(True)
    z = cnn.logits(xg)
    F.cross_entropy(z, z.argmin(1).detach(), reduction="sum").backward()
    want = (x - 0.1 * xg.grad.sign()).clamp(0, 1)
    torch.testing.assert_close(res.x_adv, want)
    assert torch.equal(res.success, ~robust(cnn, want, y))


def test_pgd_matches_torchattacks(cnn: Any, data: Any) -> None:
    ta = pytest.importorskip("torchattacks")
    x, y = data
    ours = attacks.create("pgd", {"steps": 20, "step_size": 0.25})(cnn, x, y, LINF, rng=rng(N))
    torch.manual_seed(0)
    theirs = ta.PGD(cnn.module, eps=0.1, alpha=0.025, steps=20, random_start=True)(x, y)
    # robust examples out of N, counted exactly (a float32 mean of 0.61 - 0.58 is 0.0300000310)
    a, b = int((~ours.success).sum()), int(robust(cnn, theirs, y).sum())
    assert abs(a - b) <= 0.03 * N, (a, b, N)  # same algorithm, different noise


@pytest.mark.parametrize(
    ("steps", "step"), [(1, 2.5), (5, 0.5), (10, 0.25), (20, 0.25), (50, 0.25)]
)
def test_pgd_default_step_is_max_of_madry_and_quarter_eps(
    cnn: Any, data: Any, steps: int, step: float
) -> None:
    # default step = max(2.5 / steps, 1 / 4) x eps (was 2.5 / steps: eps / 20 at 50 steps)
    x, y = data[0][:40], data[1][:40]
    default = attacks.create("pgd", {"steps": steps})(cnn, x, y, LINF, rng=rng(40))
    explicit = attacks.create("pgd", {"steps": steps, "step_size": step})(cnn, x, y, LINF,
                                                                          rng=rng(40))  # fmt: skip
    assert torch.equal(default.x_adv, explicit.x_adv)
    assert torch.equal(default.success, explicit.success)


@pytest.fixture(scope="module")
def fashion_bn() -> Any:
    """A BatchNorm SmallCNN on 10,000 Fashion-MNIST training images (seed 1, 2 epochs; cached, the
    same model as benchmarks/attack_defaults_strength.py's ``fashion-bn``): a model the attack
    defaults were not tuned on."""
    from functools import partial

    from robustlab.core.types import Domain
    from robustlab.models import TorchClassifier
    from robustlab.models.nets import SmallCNN
    from robustlab.models.training import cached_module, train_classifier

    try:
        train = datasets.get("fashion-mnist")(split="train", limit=10000)
    except ConfigError as e:
        pytest.skip(str(e))
    make = partial(SmallCNN, 1, 10, 28, 16)
    key = {"name": "bench-fashion-bn", "seed": 1, "limit": 10000, "epochs": 2, "v": 1}
    net = cached_module(key, make, partial(train_classifier, make, train, seed=1, epochs=2))
    return TorchClassifier(net, 10, Domain(0.0, 1.0, (1, 28, 28)), name="fashion-bn")


def test_default_pgd_as_strong_as_torchattacks_on_batchnorm_fashion(fashion_bn: Any) -> None:
    """PGD-50 x 5 at the default step vs torchattacks' PGD (step eps / 4, same budget), per
    example: ours may miss at most 1 of 200 examples that theirs breaks (measured: 0; with the
    old default 2.5 / steps = eps / 20, 2 -- the audit's finding on a BatchNorm Fashion CNN)."""
    ta = pytest.importorskip("torchattacks")
    d = datasets.get("fashion-mnist")(split="test", limit=200)
    x, y, eps = d.x, d.y, 0.05
    ours = attacks.create("pgd", {"steps": 50, "restarts": 5})(
        fashion_bn, x, y, ThreatModel("inf", eps), rng=ExampleRNG.from_seed(0, d.ids)
    )
    torch.manual_seed(0)
    net = fashion_bn.module
    ref = ta.MultiAttack([ta.PGD(net, eps=eps, alpha=eps / 4, steps=50) for _ in range(5)])
    theirs = robust(fashion_bn, ref(x, y), y)
    mine = ~ours.success
    only_theirs = int((mine & ~theirs).sum())
    assert only_theirs <= 1, (only_theirs, int((~mine & theirs).sum()))
    assert float(mine.float().mean()) <= float(theirs.float().mean()) + 0.005


def test_apgd_at_least_as_strong_as_torchattacks(cnn: Any) -> None:
    ta = pytest.importorskip("torchattacks")
    d = datasets.get("digits")(split="test")
    x, y = d.x[:300], d.y[:300]
    for loss in ("ce", "dlr"):
        ours = attacks.create("apgd", {"loss": loss, "steps": 20})(cnn, x, y, LINF, rng=rng(300))
        theirs = ta.APGD(cnn.module, eps=0.1, steps=20, loss=loss, seed=0)(x, y)
        a, b = 1 - ours.success.float().mean(), robust(cnn, theirs, y).float().mean()
        # measured over 3 seeds each: equal within +-1 point (e.g. CE 0.601 vs 0.603 mean)
        assert float(a) <= float(b) + 0.015, (loss, float(a), float(b))


def _ensemble_vs_torchattacks(cnn: Any, x: Any, y: Any, refs: dict, params: dict) -> None:
    worst = torch.ones(len(x), dtype=torch.bool)
    for atk in refs.values():
        worst &= robust(cnn, atk(x, y), y)
    res = attacks.create("autoattack", params)(cnn, x, y, LINF, rng=rng(len(x)))
    ours = 1 - res.success.float().mean()
    assert float(ours) <= float(worst.float().mean()) + 0.005, (
        float(ours),
        float(worst.float().mean()),
    )
    check = robust(cnn, res.x_adv, y)
    assert torch.equal(check, ~res.success)


def test_ensemble_beats_torchattacks_fast(cnn: Any, data: Any) -> None:
    ta = pytest.importorskip("torchattacks")
    x, y = data
    net = cnn.module
    torch.manual_seed(0)
    refs = {
        "apgd_ce": ta.APGD(net, eps=0.1, steps=20, loss="ce", seed=0),
        "apgd_dlr": ta.APGD(net, eps=0.1, steps=20, loss="dlr", seed=0),
        "pgd": ta.MultiAttack([ta.PGD(net, eps=0.1, alpha=0.025, steps=20) for _ in range(2)]),
        "square": ta.Square(net, eps=0.1, n_queries=300, seed=0),
    }
    members = [{"name": "apgd", "steps": 20}, {"name": "apgd_t", "steps": 20},
               {"name": "square", "n_queries": 300}]  # fmt: skip
    _ensemble_vs_torchattacks(cnn, x, y, refs, {"attacks": members})


@pytest.mark.slow
def test_ensemble_beats_torchattacks_full(cnn: Any) -> None:
    ta = pytest.importorskip("torchattacks")
    d = datasets.get("digits")(split="test")
    x, y, net = d.x[:200], d.y[:200], cnn.module
    torch.manual_seed(0)
    refs = {
        "autoattack": ta.AutoAttack(net, norm="Linf", eps=0.1, n_classes=10, seed=0),
        "pgd50x5": ta.MultiAttack([ta.PGD(net, eps=0.1, alpha=0.01, steps=50) for _ in range(5)]),
        "apgd_dlr": ta.APGD(net, eps=0.1, steps=100, loss="dlr", seed=0),
        "square": ta.Square(net, eps=0.1, n_queries=5000, seed=0),
    }
    _ensemble_vs_torchattacks(cnn, x, y, refs, {})


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_square_black_box_on_probability_adapter(logreg: Any, data: Any, norm: str) -> None:
    x, y = data
    threat = ThreatModel(norm, 0.1 if norm == "inf" else 1.0)
    res = attacks.create("square", {"n_queries": 300})(logreg, x, y, threat, rng=rng(N))
    clean = robust(logreg, x, y).float().mean()
    assert float(1 - res.success.float().mean()) < float(clean) - 0.3
    assert bool((res.queries <= 301).all()) and bool((res.queries >= 1).all())
    assert torch.equal(robust(logreg, res.x_adv, y), ~res.success)
    assert float(threat.distance(res.x_adv, x).max()) <= threat.eps + 1e-5


def test_square_matches_torchattacks_strength(cnn: Any, data: Any) -> None:
    ta = pytest.importorskip("torchattacks")
    x, y = data
    ours = attacks.create("square", {"n_queries": 300})(cnn, x, y, LINF, rng=rng(N))
    theirs = ta.Square(cnn.module, eps=0.1, n_queries=300, seed=0)(x, y)
    a, b = 1 - ours.success.float().mean(), robust(cnn, theirs, y).float().mean()
    assert float(a) <= float(b) + 0.05, (float(a), float(b))


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_hsj_batched_equals_one_at_a_time(logreg: Any, data: Any, norm: str) -> None:
    x, y = data[0][:6], data[1][:6]
    threat = ThreatModel(norm, 1.0 if norm == "2" else 0.1)
    atk = attacks.create("hsj", {"steps": 4, "init_evals": 20})
    full = atk(logreg, x, y, threat, rng=rng(6))
    for i in range(6):
        one = atk(logreg, x[i : i + 1], y[i : i + 1], threat,
                  rng=ExampleRNG.from_seed(0, torch.tensor([i])))  # fmt: skip
        torch.testing.assert_close(one.x_adv[0], full.x_adv[i], atol=1e-5, rtol=0)
        assert int(one.queries[0]) == int(full.queries[i])


def test_hsj_finds_small_l2_adversarials(logreg: Any, data: Any) -> None:
    x, y = data
    threat = ThreatModel("2", 1.5)
    res = attacks.create("hsj", {"steps": 15})(logreg, x, y, threat, rng=rng(N))
    assert float(res.success.float().mean()) > 0.7
    assert torch.equal(robust(logreg, res.x_adv, y), ~res.success)


def test_autoattack_degrades_to_black_box_members(logreg: Any, data: Any) -> None:
    x, y = data[0][:40], data[1][:40]
    members = ["apgd", {"name": "square", "n_queries": 100}]
    res = attacks.create("autoattack", {"attacks": members})(logreg, x, y, LINF, rng=rng(40))
    attacked = res.success & robust(logreg, x, y)  # -1: already misclassified, not attacked
    assert attacked.any() and bool((res.extra["member"][attacked] == 1).all())
    with pytest.raises(CapabilityError, match="apgd needs input gradients"):
        attacks.create("autoattack", {"attacks": members, "skip_unavailable": False})(
            logreg, x, y, LINF, rng=rng(40))  # fmt: skip


def _patch_contract(name: str, cnn: Any, x: torch.Tensor, y: torch.Tensor, eps: float) -> Any:
    atk = attacks.create(name, {"steps": 10})
    x0 = x.clone()
    res = atk(cnn, x, y, ThreatModel("inf", eps), rng=rng(len(x)))
    assert torch.equal(x, x0)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    changed = (res.x_adv != x).flatten(2).any(1)  # [B, H*W]
    side = round((eps * 64) ** 0.5)
    assert int(changed.sum(1).max()) <= side * side  # only the patch window changes
    assert torch.equal(robust(cnn, res.x_adv, y), ~res.success)
    again = atk(cnn, x, y, ThreatModel("inf", eps), rng=rng(len(x)))
    assert torch.equal(again.x_adv, res.x_adv)
    return res


def test_patch_contract_and_strength(cnn: Any, data: Any) -> None:
    x, y = data[0][:64], data[1][:64]
    res = _patch_contract("patch", cnn, x, y, 0.15)
    p = torch.arange(0, 64, 3)
    sub = attacks.create("patch", {"steps": 10})(cnn, x[p], y[p], ThreatModel("inf", 0.15),
                                                 rng=ExampleRNG.from_seed(0, p))  # fmt: skip
    torch.testing.assert_close(sub.x_adv, res.x_adv[p])  # batch-order invariant
    small = _patch_contract("patch", cnn, x, y, 0.05)
    assert float(res.success.float().mean()) > float(small.success.float().mean())
    uni = _patch_contract("universal_patch", cnn, x, y, 0.15)
    assert float(uni.success.float().mean()) > 0.1  # clean error is 0.016


def test_worst_of_k_matches_exhaustive_search(cnn: Any, data: Any) -> None:
    x, y = data
    for name in ("brightness", "contrast"):
        res = attacks.create("worst_of_k", {"perturbation": name, "k": 5})(
            cnn, x, y, ThreatModel("inf", 5.0), rng=rng(N))  # fmt: skip
        pert = perturbations.create(name)
        fooled = ~robust(cnn, x, y)
        for s in (1.0, 2.0, 3.0, 4.0, 5.0):
            fooled |= ~robust(cnn, pert(x, s, rng(N)), y)
        assert torch.equal(res.success, fooled)
        assert set(res.extra["severity"].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}
    rnd = attacks.create("worst_of_k", {"k": 4, "grid": False})(cnn, x, y, ThreatModel("inf", 5.0),
                                                                rng=rng(N))  # fmt: skip
    assert float(rnd.extra["severity"].max()) <= 5.0


def test_bad_input_errors(cnn: Any, logreg: Any, data: Any) -> None:
    x, y = data
    with pytest.raises(CapabilityError, match="apgd needs input gradients"):
        attacks.create("apgd")(logreg, x, y, LINF, rng=rng(N))
    with pytest.raises(ConfigError, match="loss must be 'ce' or 'dlr'"):
        attacks.create("apgd", {"loss": "cw"})(cnn, x, y, LINF, rng=rng(N))
    with pytest.raises(ConfigError, match="patch area fraction"):
        attacks.create("patch")(cnn, x, y, ThreatModel("inf", 2.0), rng=rng(N))
    with pytest.raises(UnknownComponentError):
        attacks.create("worst_of_k", {"perturbation": "brightnes"})(cnn, x, y, LINF, rng=rng(N))
    with pytest.raises(DomainError, match="channels last"):
        attacks.create("square")(cnn, x.permute(0, 2, 3, 1).reshape(N, 8, 8, 1), y, LINF,
                                 rng=rng(N))  # fmt: skip
    with pytest.raises(ConfigError, match="patch location"):
        attacks.create("patch", {"location": "middle"})(cnn, x, y, LINF, rng=rng(N))


@pytest.mark.parametrize("name", ["step_ll", "apgd", "apgd_t", "square", "hsj", "autoattack"])
def test_new_attacks_l2_contract_fast(name: str, cnn: Any, data: Any) -> None:
    # the full contract runs in test_contracts.py; this is a cheap L2 pass with small budgets
    fast = {"apgd": {"steps": 10}, "apgd_t": {"steps": 10, "n_targets": 2},
            "square": {"n_queries": 50}, "hsj": {"steps": 2, "init_evals": 20},
            "autoattack": {"attacks": [{"name": "apgd", "steps": 10},
                                       {"name": "square", "n_queries": 30}]}}  # fmt: skip
    check_attack(attacks.create(name, fast.get(name)), cnn, data[0][:32], data[1][:32],
                 ThreatModel("2", 0.5))  # fmt: skip


@pytest.mark.slow
def test_ensemble_beats_torchattacks_fashion_mnist() -> None:
    ta = pytest.importorskip("torchattacks")
    from robustlab.core.types import Domain
    from robustlab.models import TorchClassifier
    from robustlab.models.nets import SmallCNN
    from robustlab.models.training import train_classifier

    if "fashion-mnist" not in datasets:
        pytest.skip("no fashion-mnist dataset")
    try:
        train = datasets.get("fashion-mnist")(split="train", limit=10000)
    except ConfigError as e:
        pytest.skip(str(e))
    net = train_classifier(lambda: SmallCNN(1, 10, 28, 16), train, seed=0, epochs=2)
    clf = TorchClassifier(net, 10, Domain(0.0, 1.0, (1, 28, 28)))
    test = datasets.get("fashion-mnist")(split="test", limit=200)
    x, y, eps = test.x, test.y, 0.05
    torch.manual_seed(0)
    refs = {
        "autoattack": ta.AutoAttack(net, norm="Linf", eps=eps, n_classes=10, seed=0),
        "pgd50x3": ta.MultiAttack(
            [ta.PGD(net, eps=eps, alpha=eps / 10, steps=50) for _ in range(3)]
        ),
        "apgd_dlr": ta.APGD(net, eps=eps, steps=100, loss="dlr", seed=0),
        "square": ta.Square(net, eps=eps, n_queries=1000, seed=0),
    }
    worst = torch.ones(len(x), dtype=torch.bool)
    for atk in refs.values():
        worst &= robust(clf, atk(x, y), y)
    res = attacks.create("autoattack")(clf, x, y, ThreatModel("inf", eps), rng=rng(len(x)))
    ours = float(1 - res.success.float().mean())
    assert ours <= float(worst.float().mean()) + 0.005, (ours, float(worst.float().mean()))


# early-stop compaction schedules (attacks.base.compact_now): results must not depend on them
SCHEDULES = {
    "gpu": lambda frozen, rows, left, device: 2 * frozen >= rows,
    "every hit": lambda frozen, rows, left, device: True,
    "never": lambda frozen, rows, left, device: False,
}


def test_pgd_deferred_success_and_gpu_style_compaction(cnn: Any, data: Any, monkeypatch) -> None:
    """The final success check is deferred and equals a direct evaluation; every compaction
    schedule of early stop (GPU: by halves; at every hit; never: fooled rows only frozen) gives
    exactly the CPU schedule's result, and the classification task takes success from its own
    evaluation."""
    import robustlab.attacks.pgd as pgd_mod
    from robustlab.data.base import Dataset
    from robustlab.tasks.classification import ClassificationTask

    x, y = data
    x, y = x[:120], y[:120]
    th = ThreatModel("inf", 0.15)
    atk = attacks.create("pgd", {"steps": 10})
    res = atk(cnn, x, y, th, rng=rng(len(x)))
    assert res.deferred
    with torch.no_grad():
        direct = cnn.logits(res.x_adv).argmax(1) != y
    assert torch.equal(res.success, direct) and not res.deferred
    for name, rule in SCHEDULES.items():
        monkeypatch.setattr(pgd_mod, "compact_now", rule)
        other = atk(cnn, x, y, th, rng=rng(len(x)))
        assert torch.equal(other.x_adv, res.x_adv), name
        assert torch.equal(other.queries, res.queries), name
        assert torch.equal(other.success, res.success), name
    monkeypatch.undo()
    ev, extra = ClassificationTask().attack(
        atk, cnn, Dataset(x, y, ids=torch.arange(len(x))), 0.15, "inf", rng(len(x))
    )
    fooled = [1.0 - c for c in ev.correct.tolist()]
    assert extra["success"] == fooled
    assert fooled == direct.float().tolist()


def test_apgd_early_stop_schedules_agree(cnn: Any, data: Any, monkeypatch) -> None:
    """APGD and APGD-T with early stop give bit-identical results under every compaction schedule
    (fooled rows dropped at every hit, by halves as on GPUs, or only frozen), and early stop
    finds exactly the fooled set of a run without it."""
    import robustlab.attacks.apgd_core as core

    x, y = data
    x, y = x[:100], y[:100]
    th = ThreatModel("inf", 0.1)
    for name, params in (("apgd", {"steps": 20}), ("apgd_t", {"steps": 10, "n_targets": 2})):
        atk = attacks.create(name, params)
        ref = atk(cnn, x, y, th, rng=rng(len(x)))
        assert 0 < float(ref.success.float().mean()) < 1  # some rows leave, some stay
        for sched, rule in SCHEDULES.items():
            monkeypatch.setattr(core, "compact_now", rule)
            other = atk(cnn, x, y, th, rng=rng(len(x)))
            assert torch.equal(other.x_adv, ref.x_adv), (name, sched)
            assert torch.equal(other.success, ref.success), (name, sched)
            assert torch.equal(other.queries, ref.queries), (name, sched)
        monkeypatch.undo()
    full = attacks.create("apgd", {"steps": 20, "early_stop": False})(
        cnn, x, y, th, rng=rng(len(x))
    )
    ref = attacks.create("apgd", {"steps": 20})(cnn, x, y, th, rng=rng(len(x)))
    assert torch.equal(full.success, ref.success)


def test_early_stop_never_weakens_pgd_over_seeds(cnn: Any) -> None:
    """Early stop keeps the point that first fooled the model, so over several random starts it
    fools every example the same run without early stop fools (per example, Linf 0.1 / 0.2 and
    L2 1.0 on the 360 digits test images), its successes re-verify, and its mean robust accuracy
    over the seeds is within 2 images of torchattacks' PGD at the same budget (eps / 4 steps,
    random start). Measured 2026-12-07 at Linf 0.2, seeds 0-4: robustlab 0.011-0.017 with and
    without early stop (identical per seed), torchattacks 0.008-0.022: the 0.025 vs 0.011 of
    issue 22 was random-start variance, not the stop rule."""
    import torchattacks

    d = datasets.create("digits", {"split": "test"})
    x, y = d.x, d.y

    class Net(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return cnn.logits(z)

    for norm, eps in (("inf", 0.1), ("inf", 0.2), ("2", 1.0)):
        ours, theirs = [], []
        for seed in range(3):
            r = ExampleRNG.from_seed(seed, d.ids)
            es = attacks.create("pgd", {"steps": 10})(cnn, x, y, ThreatModel(norm, eps), rng=r)
            r = ExampleRNG.from_seed(seed, d.ids)
            full = attacks.create("pgd", {"steps": 10, "early_stop": False})(
                cnn, x, y, ThreatModel(norm, eps), rng=r
            )
            assert not (full.success & ~es.success).any(), (norm, eps, seed)
            assert torch.equal(~robust(cnn, es.x_adv, y), es.success)
            ours.append(1 - float(es.success.float().mean()))
            if norm == "inf":
                torch.manual_seed(seed)
                ta = torchattacks.PGD(Net(), eps=eps, alpha=eps / 4, steps=10, random_start=True)
                theirs.append(float(robust(cnn, ta(x, y), y).float().mean()))
        if theirs:
            assert sum(ours) / 3 <= sum(theirs) / 3 + 2 / len(y), (eps, ours, theirs)
