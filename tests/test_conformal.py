"""Conformal prediction (split, RSCP+, PTT): coverage clean and under attack; report section."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import torch

from robustlab.certify.conformal import (
    RSCP,
    SplitConformal,
    class_scores,
    conformal_quantile,
    coverage_and_size,
    rscp_sets,
)
from robustlab.certify.smoothing import GaussianSmoothing
from robustlab.core.errors import ConfigError
from robustlab.core.records import dumps, frame
from robustlab.core.registry import attacks, datasets, models, report_sections
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel

ALPHA, SIGMA, EPS, N_MC, BETA = 0.1, 0.25, 0.125, 128, 0.005
SPLITS = 200


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    d = datasets.get("digits")(split="test")
    assert d.ids is not None
    model = models.create("digits-cnn-noise", {"sigma": SIGMA})
    atk = attacks.create("pgd", {"steps": 10})
    adv = atk(model, d.x, d.y, ThreatModel("2", EPS), rng=ExampleRNG.from_seed(9, d.ids)).x_adv
    rs = RSCP(ALPHA, sigma=SIGMA, eps=EPS, n=N_MC, beta=BETA)
    rng = ExampleRNG.from_seed(1, d.ids)  # per-example streams: cached scores = recomputed ones
    return {
        "x": d.x, "y": d.y, "ids": d.ids, "model": model, "adv": adv,
        "smooth_clean": rs.smoothed_scores(model, d.x, rng.fork("rscp")),
        "smooth_adv": rs.smoothed_scores(model, adv, rng.fork("rscp")),
    }  # fmt: skip


def _splits(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (p[: n // 2], p[n // 2 :]) for p in (torch.randperm(n, generator=g) for _ in range(SPLITS))
    ]


def _tolerance(n_test: int) -> float:
    # mean coverage over splits: its sd is at most that of one split's, sqrt(a(1-a)/n_test)
    return 3 * math.sqrt(ALPHA * (1 - ALPHA) / n_test)


def test_quantile_and_aps_against_references() -> None:
    s = torch.rand(57, generator=torch.Generator().manual_seed(0))
    for a in (0.05, 0.1, 0.3):
        level = math.ceil(58 * (1 - a)) / 57
        assert conformal_quantile(s, a) == pytest.approx(
            np.quantile(s.numpy(), level, method="inverted_cdf")
        )
    assert conformal_quantile(s, 0.01) == math.inf  # ceil(58 * 0.99) = 58 > 57
    probs = torch.rand(6, 5, generator=torch.Generator().manual_seed(1)).softmax(1)
    u = torch.rand(6, generator=torch.Generator().manual_seed(2))
    ours = class_scores(probs, "aps", u)
    for i in range(6):  # Romano et al. (2020): mass of strictly more likely classes + u * p_c
        for c in range(5):
            ref = probs[i][probs[i] > probs[i, c]].sum() + u[i] * probs[i, c]
            assert ours[i, c].item() == pytest.approx(ref.item(), abs=1e-6)


@pytest.mark.parametrize("score", ["lac", "aps"])
def test_split_conformal_coverage(score: str, setup: dict[str, Any]) -> None:
    x, y, ids, model = setup["x"], setup["y"], setup["ids"], setup["model"]
    probs = model.logits(x).softmax(1).detach()
    u = ExampleRNG.from_seed(0, ids).fork("aps").uniform(1)
    scores = class_scores(probs, score, u)
    cov, sizes = [], []
    for cal, test in _splits(len(y)):
        q = conformal_quantile(scores[cal].gather(1, y[cal, None]), ALPHA)
        c, sz = coverage_and_size(scores[test] <= q, y[test])
        cov.append(c)
        sizes.append(sz)
    assert np.mean(cov) >= 1 - ALPHA - _tolerance(len(y) // 2)
    assert np.mean(sizes) < 2.0  # informative sets
    cp = SplitConformal(ALPHA, score).calibrate(
        model, x[:180], y[:180], ExampleRNG.from_seed(0, ids[:180])
    )
    sets = cp.predict_sets(model, x[180:], ExampleRNG.from_seed(0, ids[180:]))
    q = conformal_quantile(scores[:180].gather(1, y[:180, None]), ALPHA)
    assert cp.qhat_ == pytest.approx(q) and torch.equal(sets, scores[180:] <= q)


def test_rscp_plus_coverage_clean_and_under_attack(setup: dict[str, Any]) -> None:
    y, s_clean, s_adv = setup["y"], setup["smooth_clean"], setup["smooth_adv"]
    probs = setup["model"].logits(setup["x"]).softmax(1).detach()
    probs_adv = setup["model"].logits(setup["adv"]).softmax(1).detach()
    res: dict[str, list[float]] = {"clean": [], "adv": [], "size_adv": [], "split_adv": []}
    for cal, test in _splits(len(y)):
        q = conformal_quantile(s_clean[cal].gather(1, y[cal, None]), ALPHA - 2 * BETA)
        res["clean"].append(
            coverage_and_size(rscp_sets(s_clean[test], q, N_MC, BETA, EPS / SIGMA), y[test])[0]
        )
        c, sz = coverage_and_size(rscp_sets(s_adv[test], q, N_MC, BETA, EPS / SIGMA), y[test])
        res["adv"].append(c)
        res["size_adv"].append(sz)
        q0 = conformal_quantile(1 - probs[cal].gather(1, y[cal, None]), ALPHA)
        res["split_adv"].append(coverage_and_size(1 - probs_adv[test] <= q0, y[test])[0])
    tol = _tolerance(len(y) // 2)
    assert np.mean(res["clean"]) >= 1 - ALPHA - tol
    assert np.mean(res["adv"]) >= 1 - ALPHA - tol  # the RSCP+ guarantee under L2 attacks <= eps
    assert np.mean(res["size_adv"]) < 5  # and the sets are not the trivial full label set
    assert np.mean(res["split_adv"]) < np.mean(res["adv"])  # plain split conformal loses coverage


def test_rscp_class_matches_functions_and_ptt_keeps_coverage(setup: dict[str, Any]) -> None:
    x, y, ids, model = setup["x"], setup["y"], setup["ids"], setup["model"]
    rs = RSCP(ALPHA, sigma=SIGMA, eps=EPS, n=N_MC, beta=BETA)
    rs.calibrate(model, x[:180], y[:180], rng=ExampleRNG.from_seed(1, ids[:180]))
    q = conformal_quantile(setup["smooth_clean"][:180].gather(1, y[:180, None]), ALPHA - 2 * BETA)
    assert rs.qhat_ == pytest.approx(q)
    sets = rs.predict_sets(model, x[180:], rng=ExampleRNG.from_seed(1, ids[180:]))
    assert torch.equal(sets, rscp_sets(setup["smooth_clean"][180:], q, N_MC, BETA, EPS / SIGMA))
    ptt = RSCP(ALPHA, sigma=SIGMA, eps=EPS, n=32, beta=BETA, ptt=True)
    ptt.calibrate(model, x[60:180], y[60:180], ExampleRNG.from_seed(2, ids[60:180]), x[:60], y[:60])
    cov, _ = coverage_and_size(
        ptt.predict_sets(model, setup["adv"][180:], rng=ExampleRNG.from_seed(3, ids[180:])), y[180:]
    )
    assert cov >= 1 - ALPHA - _tolerance(180)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": 0.01, "beta": 0.01}, "2 \\* beta"),
        ({"sigma": 0.0}, "sigma"),
        ({"eps": -0.1}, "eps"),
        ({"n": 0}, "n"),
        ({"score": "foo"}, "score"),
        ({"ptt": True}, "holdout"),
    ],
)
def test_bad_input(params: dict[str, Any], match: str, setup: dict[str, Any]) -> None:
    x, y, ids, model = setup["x"][:4], setup["y"][:4], setup["ids"][:4], setup["model"]
    with pytest.raises(ConfigError, match=match):
        RSCP(**params).calibrate(model, x, y, rng=ExampleRNG.from_seed(0, ids))
    with pytest.raises(ConfigError, match="calibrate"):
        SplitConformal().predict_sets(model, x)
    with pytest.raises(ConfigError, match="alpha"):
        SplitConformal(alpha=1.5).calibrate(model, x, y)


def test_report_sections_curves_and_conformal(setup: dict[str, Any]) -> None:
    x, y, ids, model = setup["x"][:30], setup["y"][:30], setup["ids"][:30], setup["model"]
    cert = GaussianSmoothing(SIGMA, n0=32, n=200).certify(
        model, x, y, rng=ExampleRNG.from_seed(0, ids)
    )
    rows = []
    for level in (0.0, 0.25):
        ok = (cert.pred == y) & (cert.radius >= level) & ~cert.abstained
        for i in range(len(y)):
            extra = {
                "radius": cert.radius[i].item(),
                "abstained": int(cert.abstained[i]),
                "samples": 232,
            }
            rows.append(dict(model="m", replicate=0, probe="smoothing", kind="certifier", level=level,
                             example_id=int(ids[i]), label=dumps(int(y[i])), pred=dumps(int(cert.pred[i])),
                             correct=float(ok[i]), error=None, extra=json.dumps(extra), meta="{}"))  # fmt: skip
    conf = [dict(model="m", replicate=0, probe="rscp", kind="conformal", level=0.125, example_id=i,
                 label="1", pred="[1]" if i else "[]", correct=float(i > 0), error=None,
                 extra=json.dumps({"set_size": 2, "alpha": 0.1, "guaranteed": 1, "n_calibration": 9}),
                 meta="{}") for i in range(5)]  # fmt: skip
    section = report_sections.get("certification_curves")()
    data = section.build(frame(rows + conf), {})
    (curve,) = data["curves"]
    assert curve["acc"][0] == pytest.approx(
        ((cert.pred == y) & ~cert.abstained).float().mean().item()
    )
    assert curve["at_levels"][1] == pytest.approx(
        ((cert.pred == y) & (cert.radius >= 0.25)).float().mean().item()
    )
    assert all(
        a >= b for a, b in zip(curve["acc"], curve["acc"][1:], strict=False)
    )  # monotone in the radius
    html = section.render(json.loads(json.dumps(data)))
    assert "<svg" in html and "Conformal" not in html
    assert section.build(frame(conf), {}) is None  # conformal records: their own section
    conformal = report_sections.get("conformal")()
    (row,) = conformal.build(frame(rows + conf), {})["rows"]
    assert row["set_size"] == 2 and row["coverage"] == 0.8 and row["target"] == 0.9
    assert row["lo"] < 0.8 < row["hi"] and row["guaranteed"] and not row["violated"]
    html = conformal.render(json.loads(json.dumps({"rows": [row]})))
    assert "<svg" in html and "coverage" in html
    assert conformal.build(frame(rows), {}) is None
