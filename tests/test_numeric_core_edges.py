"""Edge cases of the numeric core that ``scripts/mutation.py`` found unguarded (each test kills
mutants that survived the first run; docs/testing.md lists what still survives and why).

Steepest steps with zero and tiny gradients and extreme sparsity; ranking metrics on ragged,
graded, multi-relevant and tied candidate lists against a plain per-query reference; bootstrap
intervals split into memory-bounded chunks against one-shot resampling; permutation p-values at
their extremes (every permutation a hit, none a hit) and across chunks; Benjamini-Hochberg capped
at 1; the Clopper-Pearson bound at k = 0 and 1; the conformal quantile at k = n; RSCP+ sets and
non-randomised APS scores against formulas written out here. All core dependencies only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from robustlab.attacks.steps import steepest_step
from robustlab.certify.conformal import class_scores, conformal_quantile, rscp_sets
from robustlab.certify.smoothing import lower_confidence_bound
from robustlab.core.types import Domain, lp_norm
from robustlab.metrics import significance
from robustlab.metrics.base import bootstrap_ci, paired_bootstrap_diff
from robustlab.metrics.ranking import rank_metrics
from robustlab.metrics.significance import benjamini_hochberg, permutation_pvalue

D01 = Domain(0.0, 1.0)


# steepest steps ---------------------------------------------------------------------------------
def test_linf_step_is_zero_where_the_gradient_is_zero() -> None:
    grad = torch.tensor([[0.0, 2.0, -3.0, 0.0]], dtype=torch.float64)
    step = steepest_step(grad, torch.full_like(grad, 0.5), "inf", 0.1, D01)
    torch.testing.assert_close(step, torch.tensor([[0.0, 0.1, -0.1, 0.0]], dtype=torch.float64))


def test_l2_step_has_its_size_for_tiny_gradients_and_is_zero_for_none() -> None:
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(3, 6, generator=g, dtype=torch.float64) * torch.tensor([[1e-4], [1.0], [0]])
    step = steepest_step(grad, torch.full_like(grad, 0.5), "2", 0.3, D01)
    torch.testing.assert_close(
        lp_norm(step, "2"), torch.tensor([0.3, 0.3, 0.0], dtype=torch.float64)
    )
    assert bool(torch.isfinite(step).all())


def test_l1_step_edge_cases() -> None:
    x = torch.full((1, 8), 0.5, dtype=torch.float64)
    grad = torch.tensor([[0.1, -5.0, 3.0, 0.2, 4.0, -0.3, 0.05, 2.0]], dtype=torch.float64)
    # sparsity 0.99 of 8 coordinates rounds to k = 0: at least one coordinate, with the full size
    step = steepest_step(grad, x, "1", 0.4, D01, l1_sparsity=0.99)
    want = torch.zeros(1, 8, dtype=torch.float64)
    want[0, 1] = -0.4
    torch.testing.assert_close(step, want)
    # a coordinate at the lower bound with a small positive gradient may move (inwards)
    x_lo = x.clone()
    x_lo[0, 0] = 0.0
    g2 = torch.zeros_like(grad)
    g2[0, 0] = 0.5
    step = steepest_step(g2, x_lo, "1", 0.4, D01, l1_sparsity=0.0)
    torch.testing.assert_close(step, 0.4 * (g2 > 0).double())
    # every coordinate blocked but one (at the bounds, pointing out): only that one moves
    x_b = torch.tensor([[1.0, 0.0, 1.0, 0.5]], dtype=torch.float64)
    g3 = torch.tensor([[2.0, -1.0, 3.0, 0.1]], dtype=torch.float64)
    step = steepest_step(g3, x_b, "1", 0.2, D01, l1_sparsity=0.0)
    torch.testing.assert_close(step, torch.tensor([[0.0, 0.0, 0.0, 0.2]], dtype=torch.float64))


# ranking metrics --------------------------------------------------------------------------------
def _reference(scores: list[list[float]], rel: list[list[float]], k: int, rk: int) -> dict:
    """trec_eval's definitions, one query at a time (stable order on ties)."""
    out: dict[str, list[float]] = {"rr": [], "ndcg": [], "recall": [], "ap": [], "rank": []}
    for s, r in zip(scores, rel, strict=True):
        order = sorted(range(len(s)), key=lambda i: -s[i])  # sorted() is stable
        g = [r[i] for i in order]
        hits = [i for i, v in enumerate(g) if v > 0]
        first = hits[0] + 1 if hits else math.nan
        out["rank"].append(first)
        out["rr"].append(1 / first if hits and first <= k else 0.0)
        dcg = sum(v / math.log2(i + 2) for i, v in enumerate(g[:k]))
        ideal = sorted((v for v in r if v > 0), reverse=True)[:k]
        out["ndcg"].append(dcg / sum(v / math.log2(i + 2) for i, v in enumerate(ideal)))
        n_rel = sum(v > 0 for v in r)
        out["recall"].append(sum(v > 0 for v in g[:rk]) / n_rel)
        out["ap"].append(sum((j + 1) / (i + 1) for j, i in enumerate(hits)) / n_rel)
    return out


def test_rank_metrics_on_ragged_graded_and_tied_lists() -> None:
    scores = [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        [0.2, 0.9, 0.5],  # shorter: padded inside rank_metrics
        [0.5, 0.5, 0.5, 0.1, 0.5],  # ties keep the candidate order (here and below)
        [0.1, 0.3, 0.2, 0.9],
        [1.0 if i % 7 == 0 else 0.0 for i in range(40)],  # 40 candidates, many ties
    ]
    rel = [
        [0.0, 1.0, 0.0, 3.0, 2.0, 0.0],  # graded, several relevant, the best one low
        [1.0, 0.0, 2.0],
        [0.0, 0.0, 1.0, 0.0, 2.0],
        [0.0, 2.0, 0.0, 0.0],
        [2.0 if i in (3, 22) else 1.0 if i == 14 else 0.0 for i in range(40)],
    ]
    for k, rk in ((3, 3), (2, 4)):
        m = rank_metrics(
            [torch.tensor(s, dtype=torch.float64) for s in scores], rel, k=k, recall_k=rk
        )
        ref = _reference(scores, rel, k, rk)
        for name, want in ref.items():
            torch.testing.assert_close(
                m[name], torch.tensor(want, dtype=torch.float64), msg=f"{name} at k={k}"
            )
        assert bool((m["ndcg"] <= 1 + 1e-12).all())


# bootstrap --------------------------------------------------------------------------------------
def test_bootstrap_in_chunks_equals_one_shot_resampling() -> None:
    """10,000 values: the resampling runs in chunks of 400 rows (400 + 400 + 200 for 1000); the
    means must be exactly those of one (1000 x 10,000) draw from the same generator, and the
    interval their quantiles."""
    v = np.random.default_rng(5).normal(1.0, 2.0, 10_000)
    for alpha in (0.05, 0.2):
        means = v[np.random.default_rng(3).integers(0, len(v), size=(1000, len(v)))].mean(1)
        want = np.quantile(means, [alpha / 2, 1 - alpha / 2])
        assert bootstrap_ci(v, n_boot=1000, alpha=alpha, seed=3) == tuple(want)
    # a single value: a degenerate interval, not NaN
    assert bootstrap_ci(np.array([0.7])) == (0.7, 0.7)
    assert paired_bootstrap_diff(np.array([0.2]), np.array([0.7]))[0] == pytest.approx(0.5)


def test_paired_bootstrap_diff_interval_equals_one_shot_resampling() -> None:
    rng = np.random.default_rng(6)
    a = rng.normal(0.0, 1.0, 300)
    b = a + rng.normal(0.3, 0.5, 300)
    for alpha in (0.05, 0.3):
        d = b - a
        means = d[np.random.default_rng(2).integers(0, len(d), size=(800, len(d)))].mean(1)
        want = np.quantile(means, [alpha / 2, 1 - alpha / 2])
        got = paired_bootstrap_diff(a, b, paired=True, n_boot=800, alpha=alpha, seed=2)
        assert got == (float(d.mean()), *want)


def test_unpaired_bootstrap_diff_is_b_minus_a() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(3.0, 1.0, 200), rng.normal(3.5, 1.0, 150)
    d, lo, hi = paired_bootstrap_diff(a, b, paired=False, n_boot=2000, seed=1)
    assert d == pytest.approx(b.mean() - a.mean())
    assert lo < d < hi and hi - lo < 1.0  # around b - a = 0.5, not b + a = 6.5
    assert all(np.isnan(paired_bootstrap_diff(np.array([np.nan]), b, paired=False)))
    assert all(np.isnan(paired_bootstrap_diff(a, np.array([np.nan]), paired=False)))


# permutation p-values and Benjamini-Hochberg ----------------------------------------------------
def test_permutation_pvalue_extremes() -> None:
    # every sign flip but the all-equal ones is smaller: no hit, p = 1 / (1 + n_perm) exactly
    ones = np.ones(40)
    assert permutation_pvalue(np.zeros(40), ones, paired=True, n_perm=999) == 1 / 1000
    a, b = np.arange(30) * 1e-3, 5 + np.arange(30) * 1e-3
    assert permutation_pvalue(a, b, paired=False, n_perm=999) == 1 / 1000
    # a difference of exactly 1 is a difference like any other (0/1 correctness columns)
    assert permutation_pvalue(np.zeros(30), np.ones(30), paired=False, n_perm=999) == 1 / 1000
    # identical means (unpaired): nothing to test
    assert permutation_pvalue(np.array([1.0, 2.0]), np.array([2.0, 1.0]), paired=False) == 1.0
    assert np.isnan(permutation_pvalue(np.array([np.nan]), np.array([1.0, 2.0]), paired=False))
    assert np.isnan(permutation_pvalue(np.array([1.0, 2.0]), np.array([np.nan]), paired=False))


def test_permutation_pvalue_counts_exactly_n_perm_permutations_across_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where every permutation is a hit, p = (1 + n_perm) / (1 + n_perm) = 1 exactly only if
    exactly ``n_perm`` permutations ran: checked with blocks of 7 (20 = 7 + 7 + 6)."""
    # paired: differences +1 and -1 have mean 0, every sign flip is as extreme
    monkeypatch.setattr(significance, "_CHUNK", 14)  # 14 // 2 values = 7 permutations per block
    assert permutation_pvalue(np.zeros(2), np.array([1.0, -1.0]), paired=True, n_perm=20) == 1.0
    # unpaired: the observed split [2] vs [1, 3.3] has the smallest difference of all three
    monkeypatch.setattr(significance, "_CHUNK", 21)  # 21 // 3 values = 7 per block
    a, b = np.array([2.0]), np.array([1.0, 3.3])
    assert permutation_pvalue(a, b, paired=False, n_perm=20) == 1.0


def test_benjamini_hochberg_is_capped_at_one() -> None:
    q = benjamini_hochberg([0.9, 0.95, 0.99])
    np.testing.assert_allclose(q, [0.99, 0.99, 0.99])
    q = benjamini_hochberg([0.6, 0.8])  # scaled: 1.2 and 0.8 -> monotone 0.8, 0.8
    assert bool((q <= 1).all()) and q.tolist() == [0.8, 0.8]


# certificates -----------------------------------------------------------------------------------
def test_clopper_pearson_lower_bound_at_the_ends() -> None:
    n, alpha = 100, 0.001
    k = torch.tensor([0, 1, 2, 50, 100])
    ours = lower_confidence_bound(k, n, alpha)
    want = [0.0] + [stats.beta.ppf(alpha, int(j), n - int(j) + 1) for j in k[1:]]
    torch.testing.assert_close(ours.double(), torch.tensor(want, dtype=torch.float64))
    assert float(ours[1]) > 0  # one success: a small but positive bound


def test_smoothing_abstains_on_a_coin_flip_and_certifies_a_constant() -> None:
    """Cohen et al.'s CERTIFY on two real callables over 4 pixels at 0.5: class 1 iff the noisy
    first pixel is above 0.5 (p_A = 1/2: must abstain, pred -1, radius 0) and a constant class 2
    (n_A = n: radius sigma * Phi^-1(alpha^(1/n)))."""
    from robustlab.certify.smoothing import GaussianSmoothing
    from robustlab.core.rng import ExampleRNG
    from robustlab.models import CallableClassifier

    dom = Domain(0.0, 1.0, (4,))
    x, y = torch.full((6, 4), 0.5), torch.zeros(6, dtype=torch.long)
    rng = ExampleRNG.from_seed(0, torch.arange(6))
    sm = GaussianSmoothing(sigma=0.25, n0=20, n=300, alpha=0.001)
    coin = CallableClassifier(
        lambda z: torch.nn.functional.one_hot((z[:, 0] > 0.5).long(), 3).float(),
        3,
        dom,
        version="c",
    )
    cert = sm.certify(coin, x, y, rng=rng)
    assert cert.abstained.all() and (cert.pred == -1).all() and (cert.radius == 0).all()
    assert (cert.extra["samples"] == 320).all() and (cert.extra["p_lower"] < 0.5).all()
    const = CallableClassifier(lambda z: torch.eye(3)[[2] * len(z)], 3, dom, version="k")
    cert = sm.certify(const, x, y, rng=rng)
    radius = 0.25 * stats.norm.ppf(0.001 ** (1 / 300))
    assert not cert.abstained.any() and (cert.pred == 2).all()
    torch.testing.assert_close(cert.radius.double(), torch.full((6,), radius).double())
    assert (cert.extra["samples"] == 320).all() and (cert.extra["count"] == 300).all()


def test_conformal_quantile_at_k_equal_n() -> None:
    s = torch.arange(1.0, 20.0)  # n = 19, alpha 0.05: k = ceil(20 * 0.95) = 19 = n
    assert conformal_quantile(s, 0.05) == 19.0
    assert conformal_quantile(s, 0.04) == math.inf  # k = ceil(20 * 0.96) = 20 > n


def test_aps_without_randomisation_counts_the_whole_own_mass() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], dtype=torch.float64)
    want = torch.tensor([[0.5, 0.8, 1.0], [1.0, 0.6, 0.9]], dtype=torch.float64)
    torch.testing.assert_close(class_scores(probs, "aps"), want)


def test_rscp_sets_equal_the_formula() -> None:
    """RSCP+ (Yan et al., 2024): class c is in the set iff
    Phi^-1(clip(s_c - b)) <= Phi^-1(min(1, qhat + b)) + eps / sigma, b = sqrt(log(1/beta) / 2n)."""
    g = torch.Generator().manual_seed(0)
    smoothed = torch.rand(50, 6, generator=g, dtype=torch.float64)
    n, beta = 64, 0.01
    b = math.sqrt(math.log(1 / beta) / (2 * n))
    for qhat, shift in ((0.55, 0.25), (0.3, 0.0), (0.95, 0.1)):  # the last: qhat + b > 1
        lhs = stats.norm.ppf(np.clip(smoothed.numpy() - b, 0, 1))
        thr = stats.norm.ppf(min(1.0, qhat + b)) + shift
        got = rscp_sets(smoothed, qhat, n, beta, shift)
        assert got.tolist() == (lhs <= thr).tolist(), (qhat, shift)
        assert 0 < int(got.sum()) <= smoothed.numel()
