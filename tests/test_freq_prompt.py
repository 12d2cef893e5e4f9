"""S6 test-time frequency-domain prompts (``freq-prompted`` model, ``freq-prompt`` trainer).

Real data: scikit-learn digits (8x8), a ``small-cnn`` trained by the ``standard`` trainer (frozen),
prompts trained on top of it. The seed's qualitative claim at small scale: the prompts raise the
robust accuracy of the frozen model while keeping its clean accuracy -- checked with attacks that
go end to end through the defence (PGD and APGD differentiate through the prompt addition with
the prototype selection re-made at every step and held fixed in the gradient; Square needs no
gradient). Invariants: the band mask, zero prompts = the base, the gradient with the selection
fixed, a frozen base, k-means against scikit-learn's, bad input.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

import robustlab
from robustlab.attacks.apgd import APGD
from robustlab.attacks.pgd import PGD
from robustlab.attacks.square import Square
from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import datasets, models, trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel
from robustlab.defenses.freq_prompt import FreqPromptNet, band_mask, kmeans
from robustlab.training.api import export

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPS = 0.1
BASE = {
    "name": "trained",
    "params": {
        "base": {"name": "small-cnn", "params": {"side": 8}},
        "data": {"name": "digits", "params": {"split": "train"}},
        "trainer": {"name": "standard", "params": {"lr": 3e-3}},
        "epochs": 5,
        "holdout": 128,
        "eval_eps": EPS,
    },
}


def prompted_spec(features: str = "pixels", epochs: int = 3, seed: int = 0) -> dict[str, Any]:
    base = {**BASE, "params": {**BASE["params"], "seed": seed}}
    return {
        "base": {
            "name": "freq-prompted",
            "params": {"base": base, "clusters": 8, "features": features},
        },
        "data": {"name": "digits", "params": {"split": "train"}},
        "trainer": {"name": "freq-prompt", "params": {"eps": EPS}},
        "epochs": epochs,
        "holdout": 128,
        "seed": seed,
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One model cache for the module: models trained by one test are cache hits in the next."""
    root = tmp_path_factory.mktemp("freq-prompt-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTLAB_CACHE", str(root))
        yield root


def correct(clf: Any, attack: Any = None, surrogate: Any = None) -> torch.Tensor:
    """Per test image: is ``clf`` right on the clean image (``attack`` None) or on ``attack``'s
    adversarial example (Linf eps 0.1), found on ``surrogate`` (default ``clf`` itself)?"""
    te = datasets.create("digits", {"split": "test"})
    x = te.x
    if attack is not None:
        rng = ExampleRNG.from_seed(0, te.ids)
        x = attack(surrogate or clf, te.x, te.y, ThreatModel("inf", EPS), rng=rng).x_adv
    with torch.no_grad():
        return clf.logits(x).argmax(1) == te.y


def acc(mask: torch.Tensor) -> float:
    return float(mask.float().mean())


def soft_surrogate(clf: Any, temperature: float = 0.1) -> Any:
    """A copy of the defended model whose prompt selection is differentiable (attack surrogate)."""
    sur = copy.deepcopy(clf)
    sur.module.soft_selection(temperature)
    return sur


def test_band_mask_and_prompts_stay_in_band() -> None:
    m = band_mask(8, 8, 0.25)
    assert m.shape == (8, 5) and m[0, 0] == 0 and m[4, 4] == 1  # DC out, highest frequency in
    assert band_mask(8, 8, 0.0).all()
    torch.manual_seed(0)
    net = FreqPromptNet(torch.nn.Flatten(), (1, 8, 8), clusters=3, band=0.5, features="pixels")
    with torch.no_grad():
        net.coef_re.normal_()
        net.coef_im.normal_()
    spec = torch.fft.rfft2(net.prompts(), norm="ortho")
    low = band_mask(8, 8, 0.5) == 0
    assert spec[..., low].abs().max() < 1e-5  # no energy below the band (DC included)
    assert spec[..., ~low].abs().max() > 0.1
    assert net.prompts().shape == (3, 1, 8, 8)
    with pytest.raises(ConfigError, match="band"):
        FreqPromptNet(torch.nn.Flatten(), (1, 8, 8), clusters=2, band=1.0 + 1e-6)


def test_kmeans_matches_sklearn() -> None:
    """Independent reference: scikit-learn's Lloyd KMeans from the same initial centres reaches
    the same centres and partition; our k-means++ run is within 10 % of its best-of-3 inertia."""
    from sklearn.cluster import KMeans

    x = datasets.create("digits", {"split": "train"}).x.flatten(1)[:600]
    init = x[[0, 100, 200, 300, 400, 500]]
    centres, assign = kmeans(x, 6, init=init, iters=300)
    ref = KMeans(6, init=init.numpy(), n_init=1, algorithm="lloyd", max_iter=300, tol=0).fit(
        x.numpy()
    )
    assert torch.equal(assign, torch.as_tensor(ref.labels_, dtype=torch.long))
    assert torch.allclose(centres, torch.as_tensor(ref.cluster_centers_), atol=1e-4)
    pp, pp_assign = kmeans(x, 6, seed=0)
    ours = float(((x - pp[pp_assign]) ** 2).sum())
    best = KMeans(6, n_init=3, random_state=0).fit(x.numpy()).inertia_
    assert ours <= 1.1 * best, (ours, best)  # measured 1820 vs 1754 (best of 10)
    assert torch.equal(pp_assign, torch.cdist(x, pp).argmin(1))  # converged: each to its nearest
    assert torch.equal(pp, kmeans(x, 6, seed=0)[0])  # deterministic


def test_zero_prompts_equal_base_and_gradient_fixes_selection(cache: Path) -> None:
    clf = models.create("freq-prompted", {"base": BASE, "clusters": 4, "features": "logits"})
    base = clf.undefended
    te = datasets.create("digits", {"split": "test"})
    x = te.x[:32]
    with torch.no_grad():
        assert torch.allclose(clf.logits(x), base.logits(x), atol=1e-5)
    net: FreqPromptNet = clf.module
    torch.manual_seed(1)
    with torch.no_grad():
        net.prototypes.normal_()
        net.coef_re.normal_(std=0.3)
    # BPDA-style gradient: that of the base at x + prompt[selected], selection held fixed
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(clf.logits(xg)[:, 0].sum(), xg)
    sel = net.select(x)
    xp = (x + net.prompts()[sel]).detach().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(base.logits(xp)[:, 0].sum(), xp)
    assert torch.allclose(g, g_ref, atol=1e-6)
    # the attack surrogate's soft selection tends to the hard one as its temperature goes to 0
    sur = soft_surrogate(clf, 1e-4)
    with torch.no_grad():
        assert torch.allclose(sur.logits(x), clf.logits(x), atol=1e-4)
    assert clf.module.soft is None
    # the base stays in eval mode when the wrapper trains (its BatchNorm statistics are frozen)
    net.train()
    assert not net.base.training and net.training
    net.eval()


def test_prompts_raise_robust_accuracy_through_the_defence(cache: Path) -> None:
    """S6's claim at small scale: prompts on a frozen standard model raise its robust accuracy
    and keep its clean accuracy. Robust accuracy = per image, the worst of PGD-20 and APGD-30
    through the whole defence (selection re-made at every step, held fixed in the gradient) and
    PGD-30 on a soft-selection surrogate (gradient also steers the selection), judged on the
    real model."""
    fp = robustlab.train(prompted_spec())
    std = models.create("trained", BASE["params"])
    base_before = {k: v.clone() for k, v in std.module.state_dict().items()}
    c_std, c_fp = acc(correct(std)), acc(correct(fp))
    r_std = acc(correct(std, PGD(steps=20)) & correct(std, APGD(steps=30)))
    soft = PGD(steps=30, early_stop=False)
    each = [correct(fp, PGD(steps=20)), correct(fp, APGD(steps=30)),
            correct(fp, soft, soft_surrogate(fp))]  # fmt: skip
    r_fp = acc(each[0] & each[1] & each[2])
    assert c_fp >= c_std - 0.03, (
        c_std,
        c_fp,
    )  # measured 0.969 -> 0.964 (seeds 1, 2: 0.953 -> 0.961, 0.975 -> 0.969)
    assert r_fp >= r_std + 0.05, (
        r_std,
        r_fp,
    )  # measured 0.517 -> 0.644 (PGD 0.669, APGD 0.667, soft 0.650)
    # the base was frozen: its weights are bit-identical inside the trained defence
    inner = fp.module.base.state_dict()
    assert all(torch.equal(inner[k], base_before[k]) for k in base_before)
    assert fp.module.prototypes.abs().sum() > 0  # prototypes computed in setup, saved
    hist = fp.provenance["history"]
    assert len(hist) == 3 and all("pgd_acc" in h for h in hist)
    again = robustlab.train(prompted_spec())  # cache hit: prompts and prototypes reloaded
    assert torch.equal(again.module.prototypes, fp.module.prototypes)
    assert torch.equal(again.module.coef_re, fp.module.coef_re)
    assert again.module.soft is None  # the surrogate switch is not part of the saved model
    # exported (TorchScript) with the prompts and the selection inside: same logits anywhere
    paths = export(fp, cache / "export")
    x = datasets.create("digits", {"split": "test"}).x[:64]
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(paths["torchscript"]))(x), fp.logits(x), atol=1e-4)


def test_bad_input(cache: Path) -> None:
    with pytest.raises(ConfigError, match="freq-prompted"):
        robustlab.train({**prompted_spec(), "base": BASE})  # trainer needs a freq-prompted base
    with pytest.raises(CapabilityError, match="torch model"):
        models.create("freq-prompted", {"base": {"name": "digits-logreg"}})  # black-box base
    with pytest.raises(ConfigError, match="clusters"):
        models.create("freq-prompted", {"base": BASE, "clusters": 0})
    with pytest.raises(ConfigError, match="features"):
        models.create("freq-prompted", {"base": BASE, "features": "pca"})
    with pytest.raises(ConfigError, match="did you mean"):
        trainers.create("freq-prompt", {"eps": 0.1, "clean_weigth": 1.0})


@pytest.mark.slow
def test_gain_survives_square_and_seed_variant(cache: Path) -> None:
    """Black-box Square (no gradients; sees the real selection) added to the worst case: the gain
    remains. Square is measured slightly *stronger* than the gradient attacks on the defence
    (0.644 vs 0.667 at 1,000 queries): the hard selection hinders gradients a little, which is why
    the robust accuracy reported is the per-image worst over all attacks. The seed's feature
    clustering (the frozen model's logits) also helps, less than pixels at this scale."""
    std = models.create("trained", BASE["params"])
    fp = robustlab.train(prompted_spec())
    sq = Square(n_queries=1000)
    r_std = acc(correct(std, PGD(steps=20)) & correct(std, APGD(steps=30)) & correct(std, sq))
    soft = PGD(steps=30, early_stop=False)
    r_fp = acc(correct(fp, PGD(steps=20)) & correct(fp, APGD(steps=30)) & correct(fp, sq)
               & correct(fp, soft, soft_surrogate(fp)))  # fmt: skip
    assert r_fp >= r_std + 0.05, (r_std, r_fp)  # measured seeds 0/1/2: +0.108, +0.081, +0.069
    lg = robustlab.train(prompted_spec("logits"))
    r_lg = acc(correct(lg, PGD(steps=20)) & correct(lg, APGD(steps=30))
               & correct(lg, soft, soft_surrogate(lg)))  # fmt: skip
    # measured (worst of PGD, APGD, soft-PGD; no Square): seeds 0/1/2 0.514 -> 0.575, 0.547 -> 0.597,
    # 0.550 -> 0.583
    assert r_lg >= r_std + 0.02, (r_std, r_lg)
