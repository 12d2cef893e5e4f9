"""Vision metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robustlab.core.errors import ConfigError
from robustlab.core.registry import metrics
from robustlab.metrics.vision import (
    accuracy_curve,
    adversarial_error_power_law,
    corruption_errors,
    effective_robustness,
    logit_difference_stats,
    mce,
    median_min_perturbation,
    oracle_agreement,
    power_law_fit,
    relative_drop,
)


def _records(model: str, rows: list[tuple[str, str, float, int, float]]) -> pd.DataFrame:
    """rows: (kind, probe, level, example_id, correct)."""
    return pd.DataFrame(
        [
            {
                "model": model,
                "kind": k,
                "probe": p,
                "level": lv,
                "example_id": i,
                "correct": c,
                "pred": None if c != c else str(int(c)),
            }
            for k, p, lv, i, c in rows
        ]  # fmt: skip
    )


def test_power_law_exact_and_r2() -> None:
    eps = np.array([0.01, 0.02, 0.04, 0.08])
    fit = power_law_fit(eps, 3.0 * eps**1.5)
    assert fit["exponent"] == pytest.approx(1.5)
    assert fit["coef"] == pytest.approx(3.0)
    assert fit["r2"] == pytest.approx(1.0)
    # hand-computed: log-log points (0,0), (1,1), (2,1): slope 0.5, R^2 = 1 - (1/6)/(2/3) = 0.75
    e = np.exp([0.0, 1.0, 2.0])
    fit = power_law_fit(e, np.exp([0.0, 1.0, 1.0]))
    assert fit["exponent"] == pytest.approx(0.5)
    assert fit["r2"] == pytest.approx(0.75)
    assert power_law_fit([0.0, 0.1, 0.2, 0.4], [0.0, 0.0, 0.1, 0.2])["n"] == 2  # zeros dropped
    with pytest.raises(ConfigError, match="at least 2 points"):
        power_law_fit([0.1], [0.2])


def test_adversarial_error_power_law_from_records() -> None:
    rows = []
    for lv, n_fooled in ((0.05, 1), (0.1, 2), (0.2, 4)):
        for i in range(10):
            rows.append({"level": lv, "example_id": i, "correct": float(i >= n_fooled),
                         "x.success": float(i < n_fooled), "x.clean_correct": 1.0})  # fmt: skip
    fit = adversarial_error_power_law(pd.DataFrame(rows))
    assert fit["exponent"] == pytest.approx(1.0)  # error 0.1, 0.2, 0.4 at eps 0.05, 0.1, 0.2
    assert fit["coef"] == pytest.approx(2.0)


def test_logit_difference_stats_by_hand() -> None:
    z = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]])
    s = logit_difference_stats(z, np.array([0, 0]))
    # differences z_y - z_j: example 0: 2, 1; example 1: -3, -1 -> mean -0.25, margins 1, -3
    assert s["diff_mean"] == pytest.approx(-0.25)
    assert s["margin_mean"] == pytest.approx(-1.0)
    assert s["margin_median"] == pytest.approx(-1.0)
    assert s["frac_negative_margin"] == 0.5
    with pytest.raises(ConfigError):
        logit_difference_stats(z, np.array([0]))


def test_accuracy_curve_and_median_min_perturbation() -> None:
    df = _records("a", [("attack", "pgd", 0.1, 0, 1), ("attack", "pgd", 0.1, 1, 0),
                        ("attack", "pgd", 0.2, 0, 0), ("attack", "pgd", 0.2, 1, float("nan"))])  # fmt: skip
    cur = accuracy_curve(df)
    assert cur["accuracy"].tolist() == [0.5, 0.0] and cur["n"].tolist() == [2, 2]
    mm = pd.DataFrame({"x.distance": [0.3, 0.1, 0.5, 0.2], "x.success": [1, 1, 0, 1],
                       "x.clean_correct": [1, 1, 1, 0]})  # fmt: skip
    # distances: 0.3, 0.1, inf (failed), 0 (clean error) -> median of [0, 0.1, 0.3, inf] = 0.2
    assert median_min_perturbation(mm) == pytest.approx(0.2)
    assert metrics.get("median_min_perturbation")(mm) == pytest.approx(0.2)


def _corr(model: str, clean: list[float], errs: dict[str, list[float]]) -> pd.DataFrame:
    rows = [("clean", "clean", 0.0, i, c) for i, c in enumerate(clean)]
    for probe, per_sev in errs.items():
        for s, e in enumerate(per_sev, start=1):  # e = error rate over 4 examples
            k = round(e * 4)
            rows += [("perturbation", probe, float(s), i, float(i >= k)) for i in range(4)]
    return _records(model, rows)


def test_mce_and_relative_mce_by_hand() -> None:
    model = _corr("m", [1, 1, 1, 0], {"noise": [0.25, 0.5], "blur": [0.5, 0.5]})
    base = _corr("b", [1, 1, 0, 0], {"noise": [0.5, 1.0], "blur": [0.75, 0.75]})
    ce = corruption_errors(model)
    assert ce.set_index(["probe", "level"])["error"].to_dict()[("noise", 2.0)] == 0.5
    out = mce(model, base)
    # CE_noise = 0.75 / 1.5 = 0.5, CE_blur = 1.0 / 1.5 = 2/3 -> mCE = 7/12
    assert out["mce"] == pytest.approx(7 / 12)
    # clean errors 0.25 and 0.5; rel CE_noise = (0 + 0.25) / (0 + 0.5) = 0.5,
    # rel CE_blur = (0.25 + 0.25) / (0.25 + 0.25) = 1 -> relative mCE = 0.75
    assert out["relative_mce"] == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="no \\(corruption, severity\\) pairs"):
        mce(model, _corr("b", [1], {"fog": [0.5]}))


def test_relative_drop_and_effective_robustness() -> None:
    assert relative_drop(0.8, 0.6) == pytest.approx(0.25)
    with pytest.raises(ConfigError):
        relative_drop(0.0, 0.1)
    # three models on the line ood = 0.5 id + 0.1 and one 0.05 above it (linear scale)
    i = np.array([0.6, 0.7, 0.8, 0.9])
    o = 0.5 * i + 0.1
    o[3] += 0.05
    er = effective_robustness(i, o, scale="linear")
    fit = np.polyfit(i, o, 1)
    assert er["slope"] == pytest.approx(fit[0])
    resid = o - np.polyval(fit, i)
    np.testing.assert_allclose(er["effective_robustness"], resid, atol=1e-12)
    np.testing.assert_allclose(er["relative_drop"], (i - o) / i)
    lg = effective_robustness([0.5, 0.731058578630], [0.5, 0.731058578630])  # logit 0 and 1
    assert lg["slope"] == pytest.approx(1.0) and lg["intercept"] == pytest.approx(0.0, abs=1e-9)


def test_oracle_agreement_by_hand() -> None:
    a = pd.DataFrame({"probe": "fog", "level": 1.0, "example_id": [0, 1, 2, 3],
                      "pred": ["1", "2", "3", None]})  # fmt: skip
    o = pd.DataFrame({"probe": "fog", "level": 1.0, "example_id": [0, 1, 2, 3],
                      "pred": ["1", "0", "3", "4"]})  # fmt: skip
    out = oracle_agreement(a, o)
    assert out["agreement"].tolist() == [0.5] and out["n"].tolist() == [4]
