"""robustlab.metrics.detection against scikit-learn (AUROC, AP) and pytorch-ood (FPR at TPR)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from robustlab.core.errors import ConfigError
from robustlab.metrics.detection import aupr, auroc, detection_metrics, fpr_at_tpr


@pytest.fixture
def pood_functional(pytorch_ood: None):
    """pytorch-ood's metric functions (see the ``pytorch_ood`` fixture in conftest.py)."""
    from pytorch_ood.metrics import functional

    return functional


def _cases(seed: int = 0, n_cases: int = 300):
    """Random small cases with many ties (few distinct scores) and unbalanced classes."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n_cases:
        n = int(rng.integers(2, 80))
        s = rng.integers(0, int(rng.integers(1, 12)), n).astype(float) * 0.25
        p = rng.random(n) < rng.random()
        if p.all() or not p.any():
            continue
        out.append((s, p))
    return out


def test_worked_example_by_hand() -> None:
    s, p = [0.9, 0.8, 0.3, 0.1], [True, False, True, False]
    # positive pairs ranked right: (0.9 > 0.8), (0.9 > 0.1), (0.3 > 0.1); wrong: (0.3 < 0.8)
    assert auroc(s, p) == pytest.approx(3 / 4)
    # precision at each positive: 1/1, 2/3
    assert aupr(s, p) == pytest.approx((1 + 2 / 3) / 2)
    # TPR reaches 0.95 only at threshold 0.3, where one of two negatives is above: FPR 1/2
    assert fpr_at_tpr(s, p) == 0.5
    assert fpr_at_tpr(s, p, tpr=0.5) == 0.0
    # a tie between a positive and a negative counts one half
    assert auroc([1.0, 1.0], [True, False]) == 0.5
    assert aupr([1.0, 1.0], [True, False]) == 0.5


def test_equal_to_sklearn_with_ties() -> None:
    for s, p in _cases(n_cases=150):
        assert auroc(s, p) == pytest.approx(roc_auc_score(p, s), abs=1e-12)
        assert aupr(s, p) == pytest.approx(average_precision_score(p, s), abs=1e-12)


def test_fpr_at_tpr_equal_to_pytorch_ood(pood_functional) -> None:
    import torch

    for s, p in _cases(seed=1, n_cases=150):
        labels = torch.tensor(np.where(p, -1, 0))  # pytorch-ood: label < 0 is the positive class
        for t in (0.0, 0.3, 0.9, 0.95, 1.0):
            ref = float(pood_functional.fpr_at_tpr(torch.tensor(s), labels, t))
            assert fpr_at_tpr(s, p, t) == ref
        ref_auroc = float(pood_functional.auroc(torch.tensor(s), labels))
        assert auroc(s, p) == pytest.approx(ref_auroc, abs=1e-12)


def test_rows_are_batched_and_match_one_by_one() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(200) < 0.3
    rows = np.round(rng.normal(size=(7, 200)) + p, 1)  # rounding makes ties
    for fn, ref in ((auroc, roc_auc_score), (aupr, average_precision_score)):
        got = fn(rows, p)
        assert isinstance(got, np.ndarray) and got.shape == (7,)
        np.testing.assert_allclose(got, [ref(p, r) for r in rows], atol=1e-12)
    np.testing.assert_array_equal(fpr_at_tpr(rows, p), [fpr_at_tpr(r, p) for r in rows])
    # per-row labels (e.g. bootstrap resamples) are accepted too
    labels = np.stack([p, ~p])
    np.testing.assert_allclose(auroc(rows[:2], labels), [auroc(rows[0], p), auroc(rows[1], ~p)])


@pytest.mark.usefixtures("one_torch_thread")
def test_invariants_on_real_failure_detection() -> None:
    """MSP of the digits MLP on the digits test split: monotone transforms change nothing,
    flipping the classes and the sign gives AUROC unchanged, perfect scores give 1 / 1 / 0."""
    import torch

    from robustlab.core.registry import datasets, models

    data = datasets.create("digits", {"split": "test"})
    with torch.no_grad():
        proba = torch.softmax(models.create("digits-mlp", {"seed": 0}).logits(data.x), 1).numpy()
    msp = proba.max(axis=1).astype(np.float64)
    correct = proba.argmax(axis=1) == data.y.numpy()
    assert 0 < (~correct).sum() < len(correct)
    m = detection_metrics(msp, correct)
    assert m["auroc"] == pytest.approx(roc_auc_score(correct, msp), abs=1e-12)
    assert m["aupr"] == pytest.approx(average_precision_score(correct, msp), abs=1e-12)
    assert 0.7 < m["auroc"] < 1.0  # MSP separates right from wrong (Hendrycks & Gimpel 2017)
    assert auroc(np.log(msp) * 3 + 1, correct) == pytest.approx(m["auroc"], abs=1e-12)
    assert aupr(np.exp(msp), correct) == pytest.approx(m["aupr"], abs=1e-12)
    assert auroc(-msp, ~correct) == pytest.approx(m["auroc"], abs=1e-12)
    perfect = correct.astype(float)
    assert (auroc(perfect, correct), aupr(perfect, correct), fpr_at_tpr(perfect, correct)) == (
        1.0,
        1.0,
        0.0,
    )


def test_bad_input_has_clear_errors() -> None:
    with pytest.raises(ConfigError, match="one class: no negative"):
        auroc([0.1, 0.2], [True, True])
    with pytest.raises(ConfigError, match="one class: no positive"):
        aupr([0.1, 0.2], [False, False])
    with pytest.raises(ConfigError, match="1 NaN scores"):
        fpr_at_tpr([0.1, float("nan"), 0.3], [True, False, True])
    with pytest.raises(ConfigError, match=r"tpr must be a number in \[0, 1\]"):
        fpr_at_tpr([0.1, 0.2], [True, False], tpr=95)
    with pytest.raises(ConfigError, match=r"tpr must be a number in \[0, 1\]"):
        fpr_at_tpr([0.1, 0.2], [True, False], tpr=1.5)  # just above the range, not a percent
    with pytest.raises(ConfigError, match="is_positive has shape"):
        auroc([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ConfigError, match="booleans"):
        auroc([0.1, 0.2], [2, 0])


def test_roc_curve_equals_sklearn_and_integrates_to_auroc() -> None:
    from sklearn.metrics import roc_curve as sk_roc

    from robustlab.metrics.detection import roc_curve

    for s, p in _cases(seed=5, n_cases=50):
        fpr, tpr = roc_curve(s, p)
        ref_fpr, ref_tpr, _ = sk_roc(p, s, drop_intermediate=False)
        np.testing.assert_allclose(fpr, ref_fpr)
        np.testing.assert_allclose(tpr, ref_tpr)
        assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(s, p), abs=1e-12)


def test_bootstrap_ci_brackets_and_matches_a_loop() -> None:
    from robustlab.metrics.detection import bootstrap_ci

    rng = np.random.default_rng(7)
    p = rng.random(300) < 0.2
    s = rng.normal(size=300) + 1.5 * p
    lo, hi = bootstrap_ci(auroc, s, p, n=300, seed=3)
    assert lo < auroc(s, p) < hi and hi - lo < 0.2
    # the same resamples scored one by one with scikit-learn give the same interval
    pos, neg = np.flatnonzero(p), np.flatnonzero(~p)
    r = np.random.default_rng(3)
    idx = np.concatenate(
        [
            pos[r.integers(0, len(pos), (300, len(pos)))],
            neg[r.integers(0, len(neg), (300, len(neg)))],
        ],
        axis=1,
    )
    vals = [roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], s[i]) for i in idx]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(vals, [0.025, 0.975])), abs=1e-12)
