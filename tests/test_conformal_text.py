"""Conformal prediction sets for a text classifier: bbc-news (real articles) + tfidf-logreg.

Split conformal covers exchangeable test labels with probability >= 1 - alpha for any model and
input type; RSCP+ (Gaussian smoothing of the input) does not apply to texts and is refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustlab.certify.conformal import SplitConformal, class_scores, conformal_quantile
from robustlab.certify.conformal_probe import ConformalProbe, calibrate, validate
from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

ALPHA, SPLITS = 0.1, 200
SUITE = """
name: conformal-text
models: [{name: tfidf-logreg}]
data: {name: bbc-news, params: {split: test, limit: 300, max_words: 100}}
probes:
  - {kind: conformal, name: split, levels: [0, 0.3], params: {perturbation: word_deletion}}
  - {kind: conformal, name: split, label: split-attack, levels: [0, 0.1],
     params: {attack: textfooler, attack_params: {max_queries: 50, min_similarity: 0}}}
"""


@pytest.fixture(scope="module")
def bbc() -> dict[str, Any]:
    d = datasets.get("bbc-news")(split="test")
    model = models.create("tfidf-logreg")
    assert isinstance(d.x, list) and isinstance(d.y, torch.Tensor) and d.ids is not None
    return {"data": d, "model": model, "probs": model.logits(d.x).softmax(1)}


@pytest.mark.parametrize("score", ["lac", "aps"])
def test_split_conformal_covers_real_texts(score: str, bbc: dict[str, Any]) -> None:
    """200 random half/half splits of the 634 test articles: mean coverage >= 1 - alpha within
    binomial noise (its sd is at most one split's, sqrt(a (1 - a) / n_test)); sets are small."""
    d, model, probs = bbc["data"], bbc["model"], bbc["probs"]
    y, n = d.y, len(d.y)
    u = ExampleRNG.from_seed(0, d.ids).fork("aps").uniform(1)
    scores = class_scores(probs, score, u)
    g = torch.Generator().manual_seed(0)
    cov, size = [], []
    for _ in range(SPLITS):
        perm = torch.randperm(n, generator=g)
        cal, test = perm[: n // 2], perm[n // 2 :]
        q = conformal_quantile(scores[cal].gather(1, y[cal, None]), ALPHA)
        sets = scores[test] <= q
        cov.append(sets.gather(1, y[test, None]).float().mean().item())
        size.append(sets.float().sum(1).mean().item())
    tol = 3 * math.sqrt(ALPHA * (1 - ALPHA) / (n - n // 2))
    assert np.mean(cov) >= 1 - ALPHA - tol
    assert np.mean(cov) <= 1 - ALPHA + 0.05  # not trivially full sets
    assert np.mean(size) < 1.5
    # the class API on list[str] inputs gives the same sets as the direct computation
    cal, test = list(range(0, n, 2)), list(range(1, n, 2))
    rng = ExampleRNG.from_seed(0, d.ids)
    cp = SplitConformal(ALPHA, score).calibrate(
        model, [d.x[i] for i in cal], y[cal], rng.take(torch.tensor(cal))
    )
    sets = cp.predict_sets(model, [d.x[i] for i in test], rng.take(torch.tensor(test)))
    q = conformal_quantile(scores[cal].gather(1, y[cal, None]), ALPHA)
    assert cp.qhat_ == pytest.approx(q)
    assert torch.equal(sets, scores[test] <= q)


def test_probe_on_texts_through_the_runner(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    run_id = run_suite(Suite.from_yaml(SUITE), store, progress=False)
    df = store.records(run_id)
    df = df[df["kind"] == "conformal"]
    assert df["error"].isna().all()
    n_test = df.groupby(["probe", "level"]).size()
    assert (n_test == n_test.iloc[0]).all() and 100 < n_test.iloc[0] < 200
    n_cal = int(df["x.n_calibration"].iloc[0])
    cov = df.groupby(["probe", "level"])["correct"].mean()
    tol = 3 * math.sqrt(ALPHA * (1 - ALPHA) * (1 / n_test.iloc[0] + 1 / n_cal))  # one split
    assert cov["split", 0.0] >= 1 - ALPHA - tol
    assert cov["split", 0.0] == cov["split-attack", 0.0]  # level 0: same clean sets
    assert cov["split-attack", 0.1] < cov["split-attack", 0.0]  # the attack lowers coverage
    guaranteed = df.groupby(["probe", "level"])["x.guaranteed"].first().astype(int)
    assert guaranteed["split", 0.0] == 1 and guaranteed["split", 0.3] == 0


@pytest.mark.parametrize("method", ["rscp", "rscp-ptt"])
def test_rscp_on_texts_is_refused(method: str, bbc: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="does not apply to text"):
        validate(method, {}, "2", [0.0], text=True)
    d = bbc["data"].take(range(40))
    settings = validate(method, {}, "2", [0.0])  # modality unknown before the data are loaded
    with pytest.raises(ConfigError, match="does not apply to text"):
        calibrate(method, settings, [0.0], bbc["model"], d, 0, 1)


@pytest.mark.parametrize(
    ("params", "levels", "match"),
    [
        ({"attack": "pgd"}, [0.1], "does not attack texts"),
        ({}, [0.0, 2.0], "edit rates in \\[0, 1\\]"),
        ({"perturbation": "typo", "attack": "textfooler"}, [0.1], "not both"),
        ({"perturbation": "tpyo"}, [0.1], "typo"),
    ],
)
def test_bad_text_settings(params: dict[str, Any], levels: list[float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        p = validate("split", params, "2", levels, text=True)
        d = datasets.get("bbc-news")(split="test").take(range(20))
        calibrate("split", p, levels, models.create("tfidf-logreg"), d, 0, 1)


def test_text_default_attack() -> None:
    assert ConformalProbe().attack_name(text=True) == "textfooler"
    assert ConformalProbe().attack_name(text=False) == "pgd"
