"""S38 black-box tuning of frozen features (linear probe, MLP tuning, NMTune) on real data.

A ``small-cnn`` pre-trained on digits with 40 % symmetric label noise (the ``noisy-labels``
transform) is the frozen extractor; heads are trained on the clean digits training labels through
its frozen features and evaluated on the 360 test images (ID) and on those images corrupted by the
perturbations registry (OOD: gaussian_noise, contrast, gaussian_blur, brightness at severity 3).
What reproduces at this scale (docs/noisy-labels.md): NMTune's regularisers do not cost ID
accuracy and keep MLP tuning at least as good OOD; the paper's "NMTune beats the linear probe"
does NOT reproduce here (the linear probe is clearly better OOD), and no test pretends it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustlab.attacks.pgd import PGD
from robustlab.core.errors import CapabilityError, ConfigError, DomainError
from robustlab.core.registry import datasets, models, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel
from robustlab.training.nmtune import FeatureExtractor, features, fit_head, nmtune_terms, spectrum

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PRE = {
    "name": "trained",
    "params": {
        "base": {"name": "small-cnn", "params": {"side": 8}},
        "data": {"name": "noisy-labels", "params": {
            "data": {"name": "digits", "params": {"split": "train"}}, "kind": "symmetric",
            "rate": 0.4}},
        "trainer": {"name": "standard", "params": {"lr": 3e-3}},
        "epochs": 10,
        "holdout": 0,
    },
}  # fmt: skip
PRE_FAST = {"name": "trained", "params": {**PRE["params"], "epochs": 2}}
DOWN = {"name": "digits", "params": {"split": "train"}}
CORRUPTIONS = ["gaussian_noise", "contrast", "gaussian_blur", "brightness"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("nmtune-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTLAB_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def evaluation() -> tuple[Any, dict[str, torch.Tensor]]:
    te = datasets.create("digits", {"split": "test"})
    rng = ExampleRNG.from_seed(0, te.ids)
    ood = {c: perturbations.create(c)(te.x, 3, rng).clamp(0, 1) for c in CORRUPTIONS}
    return te, ood


def tuned(method: str, pre: dict[str, Any] = PRE, **params: Any) -> Any:
    spec = {"features": pre, "data": DOWN, "method": method, **params}
    return models.create("feature-tuned", spec)


def accuracies(clf: Any, evaluation: tuple[Any, dict[str, torch.Tensor]]) -> tuple[float, float]:
    te, ood = evaluation
    with torch.no_grad():
        ida = float((clf.logits(te.x).argmax(1) == te.y).float().mean())
        oo = [float((clf.logits(v).argmax(1) == te.y).float().mean()) for v in ood.values()]
    return ida, sum(oo) / len(oo)


@pytest.mark.slow
def test_nmtune_regularisers_keep_id_and_ood_against_mlp_tuning(
    cache: Path, evaluation: Any
) -> None:
    """Slow (a 10-epoch pre-training and three heads). Measured, seeds 0/1/2: ID linear probe
    0.961/0.981/0.961, MLP 0.989/0.975/0.981, NMTune 0.986/0.978/0.983; OOD 0.713/0.739/0.687,
    0.524/0.580/0.529, 0.535/0.632/0.554. On a fresh machine (2026-12-07, the pre-trained model
    trained again there) seed 0 gave MLP 0.539 vs NMTune 0.536 OOD: one example of 360, so NMTune
    is held to "not worse than MLP tuning by more than 1 point", not strictly better."""
    lp_id, lp_ood = accuracies(tuned("linear-probe"), evaluation)
    mlp_id, mlp_ood = accuracies(tuned("mlp"), evaluation)
    nm_id, nm_ood = accuracies(tuned("nmtune"), evaluation)
    assert nm_ood >= mlp_ood - 0.01, (mlp_ood, nm_ood)
    assert nm_id >= mlp_id - 0.01 and nm_id >= lp_id - 0.01, (lp_id, mlp_id, nm_id)
    assert lp_ood > nm_ood  # recorded, not the paper's claim: see the module docstring
    assert min(lp_id, nm_id) >= 0.9


def test_black_box_extractor_untouched_cached_and_attackable_end_to_end(
    cache: Path, evaluation: Any
) -> None:
    pre = models.create("trained", PRE_FAST["params"])
    before = {k: v.clone() for k, v in pre.module.state_dict().items()}
    clf = tuned("nmtune", PRE_FAST, epochs=5)
    after = clf.module.extractor.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen: bit-identical
    assert not any(p.requires_grad for p in clf.module.extractor.parameters())
    clf.module.train()
    assert not clf.module.extractor.net.training  # BatchNorm keeps pre-training statistics
    clf.module.eval()
    again = tuned("nmtune", PRE_FAST, epochs=5)  # cache hit: same head, same provenance
    assert again.provenance == clf.provenance and clf.provenance["feature_dim"] == 64
    from robustlab.report.sections.training import Training

    row = Training().build(None, {"environment": {"training": {"m#0": clf.provenance}}})["rows"][0]
    assert row["trainer"].startswith("feature-tuned/nmtune(") and row["epochs"] == 5
    ha, hb = clf.module.head.state_dict(), again.module.head.state_dict()
    assert all(torch.equal(ha[k], hb[k]) for k in ha)
    te, _ = evaluation
    x, y = te.x[:64], te.y[:64]
    res = PGD(steps=10)(
        clf, x, y, ThreatModel("inf", 0.2), rng=ExampleRNG.from_seed(0, te.ids[:64])
    )
    assert float(res.success.float().mean()) > 0.5  # gradients reach the input through both parts


def test_regularisers_match_an_independent_numpy_computation() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(32, 8, generator=g, dtype=torch.float64)
    z = f + 0.3 * torch.randn(32, 8, generator=g, dtype=torch.float64)
    t = nmtune_terms(f, z, top_k=3)
    fn, zn = f.numpy(), z.numpy()
    fu = fn / np.linalg.norm(fn, axis=1, keepdims=True)
    zu = zn / np.linalg.norm(zn, axis=1, keepdims=True)
    assert float(t["mse"]) == pytest.approx(((fu - zu) ** 2).mean(), rel=1e-12)
    c = np.cov(zn, rowvar=False)
    assert float(t["cov"]) == pytest.approx(((c - np.diag(np.diag(c))) ** 2).sum() / 8, rel=1e-10)
    s = np.linalg.svd(zn, compute_uv=False)
    assert float(t["svd"]) == pytest.approx(-(s / s.sum())[:3].mean(), rel=1e-10)
    q = s / s.sum()
    sp = spectrum(z)
    assert sp["sve"] == pytest.approx(-(q * np.log(q)).sum()) and sp["lsvr"] == pytest.approx(-np.log(q[0]))  # fmt: skip


def test_covariance_term_decorrelates_the_tuned_features() -> None:
    """On correlated synthetic features, NMTune's covariance weight shrinks the tuned features'
    off-diagonal covariance relative to MLP tuning (what L_COV is for)."""
    g = torch.Generator().manual_seed(1)
    y = torch.randint(4, (400,), generator=g)
    base = torch.randn(400, 2, generator=g) + y[:, None].float()
    f = base @ torch.randn(2, 16, generator=g) + 0.05 * torch.randn(400, 16, generator=g)

    def offdiag(z: torch.Tensor) -> float:
        c = torch.cov(z.T)
        return float((c - torch.diag(torch.diag(c))).pow(2).sum())

    mlp, _ = fit_head(f, y, 4, method="mlp", epochs=30, seed=0)
    nm, hist = fit_head(f, y, 4, method="nmtune", epochs=30, cov=10.0, seed=0)
    with torch.no_grad():
        assert offdiag(nm.transform(f)) < 0.5 * offdiag(mlp.transform(f))
    assert hist[-1]["cov"] < hist[0]["cov"]


def test_bad_input_is_refused_with_the_reason(cache: Path) -> None:
    with pytest.raises(ConfigError, match="method"):
        tuned("lp", PRE_FAST)
    with pytest.raises(ConfigError, match="did you mean"):
        models.create("feature-tuned", {"features": {"name": "small-cn"}, "data": DOWN})
    with pytest.raises(DomainError):  # 8x8 digits for a 28x28 extractor
        models.create("feature-tuned", {"features": {"name": "small-cnn"},
                                        "data": {"name": "digits"}})  # fmt: skip

    class NoLinear:
        module = torch.nn.Conv2d(1, 2, 3)
        mean = std = None

    with pytest.raises(CapabilityError, match="nn.Linear"):
        FeatureExtractor(NoLinear())
    with pytest.raises(ConfigError, match="non-finite"):
        fit_head(torch.full((4, 2), float("nan")), torch.tensor([0, 1, 0, 1]), 2)
    clf = models.create("small-cnn", {"side": 8})
    assert features(clf, torch.rand(5, 1, 8, 8)).shape == (5, 64)
