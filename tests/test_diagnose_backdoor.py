"""S26 CTRL backdoor: the frequency trigger against a transcription of the paper's algorithm, the
poisoned dataset, the two detection defences against exact references, a poisoned training run
reaching the attack-success target, and suite -> store -> report."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.fft import dctn, idctn
from sklearn.metrics import roc_auc_score, silhouette_samples

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import datasets, diagnoses, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.data.ctrl_poisoned import PoisonRateWarning
from robustlab.diagnose.backdoor import (
    class_normalised,
    clustering_scores,
    silhouette,
    spectral_scores,
)
from robustlab.perturbations.image.ctrl_trigger import RGB2YCC, YCC_OFFSET, ctrl_trigger
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FM = {"name": "fashion-mnist", "params": {"split": "train", "limit": 2000}}


# the trigger --------------------------------------------------------------------------------
def paper_trigger(
    x: np.ndarray, magnitude: float, window: int, positions: list[tuple[int, int]],
    channels: list[int],
) -> np.ndarray:  # fmt: skip
    """A transcription of CTRL's ``Poison_Frequency`` (per image, channel and window, loops):
    x * 255, RGB -> YCbCr (grey: as is), DCT-II (ortho) per window, + magnitude at each position,
    inverse DCT, back to RGB, / 255, clip [0, 1]."""
    out = np.empty_like(x, dtype=np.float64)
    for i in range(len(x)):
        img = x[i].astype(np.float64) * 255.0  # [C, H, W]
        rgb = img.shape[0] == 3
        if rgb:
            img = np.einsum("ij,jhw->ihw", RGB2YCC, img) + YCC_OFFSET[:, None, None]
        for ch in channels:
            for h in range(0, img.shape[1], window):
                for w in range(0, img.shape[2], window):
                    block = dctn(img[ch, h : h + window, w : w + window], norm="ortho")
                    for u, v in positions:
                        block[u, v] += magnitude
                    img[ch, h : h + window, w : w + window] = idctn(block, norm="ortho")
        if rgb:
            img = np.einsum("ij,jhw->ihw", np.linalg.inv(RGB2YCC), img - YCC_OFFSET[:, None, None])
        out[i] = np.clip(img / 255.0, 0.0, 1.0)
    return out


def test_trigger_equals_paper_algorithm_grey_and_rgb() -> None:
    grey = datasets.create("fashion-mnist", {"split": "test", "limit": 16}).x
    for window, pos in ((28, [(13, 13), (27, 27)]), (14, [(6, 6), (13, 13)])):
        ours = ctrl_trigger(grey, 300.0, window).double().numpy()
        ref = paper_trigger(grey.numpy(), 300.0, window, pos, [0])
        np.testing.assert_allclose(ours, ref, atol=2e-6)
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(6, 3, 32, 32, generator=g) * 0.8 + 0.1
    ours = ctrl_trigger(rgb, 100.0).double().numpy()  # the paper's CIFAR defaults
    ref = paper_trigger(rgb.numpy(), 100.0, 32, [(15, 15), (31, 31)], [1, 2])
    np.testing.assert_allclose(ours, ref, atol=2e-6)
    # unclipped, the window's DCT moves by exactly the magnitude at the planted frequencies only
    mid = torch.full((1, 1, 28, 28), 0.5)
    d = dctn((ctrl_trigger(mid, 50.0) - mid)[0, 0].double().numpy() * 255, norm="ortho")
    expect = np.zeros((28, 28))
    expect[13, 13] = expect[27, 27] = 50.0
    np.testing.assert_allclose(d, expect, atol=1e-4)
    # as a perturbation: severity scales the magnitude, 0 is the identity
    p = perturbations.create("ctrl-trigger", {"magnitude": 100.0})
    rng = ExampleRNG.from_seed(0, torch.arange(16))
    assert torch.equal(p(grey, 0, rng), grey)
    assert torch.allclose(p(grey, 2, rng), ctrl_trigger(grey, 200.0))


def test_trigger_bad_input() -> None:
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ConfigError, match="window 5 must be >= 2 and divide"):
        ctrl_trigger(x, 100.0, window=5)
    with pytest.raises(ConfigError, match=r"position \[3, 30\] is not a frequency"):
        ctrl_trigger(x, 100.0, positions=[[3, 30]])
    with pytest.raises(ConfigError, match="channels \\[1\\] are not in 0..0"):
        ctrl_trigger(x, 100.0, channels=[1])
    with pytest.raises(ConfigError, match="not square"):
        ctrl_trigger(torch.rand(2, 1, 28, 14), 100.0)


# the poisoned dataset ------------------------------------------------------------------------
def test_poisoned_dataset_dirty_and_clean_label() -> None:
    base = datasets.create(FM["name"], FM["params"])
    d = datasets.create("ctrl-poisoned", {"data": FM, "target": 3, "rate": 0.01, "window": 14,
                                          "magnitude": 300.0})  # fmt: skip
    flag = d.fields["poisoned"]
    assert int(flag.sum()) == 20  # round(0.01 * 2000)
    assert (base.y[flag] != 3).all() and (d.y[flag] == 3).all()  # relabelled, from other classes
    assert torch.equal(d.fields["clean_y"], base.y) and torch.equal(d.y[~flag], base.y[~flag])
    assert torch.equal(d.x[~flag], base.x[~flag])
    assert torch.allclose(d.x[flag], ctrl_trigger(base.x[flag], 300.0, 14))
    assert d.meta["poison"].count("poisoned") == 20 and torch.equal(d.ids, base.ids)
    c = datasets.create("ctrl-poisoned", {"data": FM, "target": 3, "rate": 0.01,
                                          "mode": "clean-label"})  # fmt: skip
    assert int(c.fields["poisoned"].sum()) == 20 and (base.y[c.fields["poisoned"]] == 3).all()
    assert torch.equal(c.y, base.y)  # labels never touched


def test_poisoned_dataset_bad_input() -> None:
    with pytest.raises(ConfigError, match="rate 0.6 is above 0.5: refused"):
        datasets.create("ctrl-poisoned", {"data": FM, "rate": 0.6})
    with pytest.warns(PoisonRateWarning, match="above the paper's 1%"):
        datasets.create("ctrl-poisoned", {"data": FM, "rate": 0.02})
    with pytest.raises(ConfigError, match="target class 10 is not in 0..9"):
        datasets.create("ctrl-poisoned", {"data": FM, "target": 10})
    with (
        pytest.raises(
            ConfigError, match="400 poisons, but only 194 examples are in the target class 0"
        ),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", PoisonRateWarning)
        datasets.create("ctrl-poisoned", {"data": FM, "rate": 0.2, "mode": "clean-label"})
    with pytest.raises(ConfigError, match="not a batch of images"):
        datasets.create("ctrl-poisoned", {"data": {"name": "bbc-news"}})


# the defences -----------------------------------------------------------------------------
def test_spectral_signature_on_planted_rank_one_shift() -> None:
    rng = np.random.default_rng(0)
    n, d, k = 400, 20, 20
    feats = rng.normal(size=(2 * n, d))
    labels = np.repeat([0, 1], n)
    shift = rng.normal(size=d)
    shift *= 6 / np.linalg.norm(shift)
    poisoned = np.zeros(2 * n, bool)
    poisoned[rng.choice(n, k, replace=False)] = True  # all in class 0
    feats[poisoned] += shift
    got = spectral_scores(torch.tensor(feats), torch.tensor(labels)).numpy()
    for c in (0, 1):
        m = labels == c
        r = feats[m] - feats[m].mean(0)
        v = np.linalg.svd(r, full_matrices=False)[2][0]  # numpy's exact top singular vector
        np.testing.assert_allclose(got[m], (r @ v) ** 2, rtol=1e-9)
        # the top direction is the planted one
        assert abs(v @ shift) / np.linalg.norm(shift) > 0.9 if c == 0 else True
    norm = class_normalised(torch.tensor(got), torch.tensor(labels)).numpy()
    np.testing.assert_allclose([norm[labels == c].mean() for c in (0, 1)], 1.0)
    assert roc_auc_score(poisoned, norm) > 0.99


def test_silhouette_equals_sklearn_and_clustering_finds_planted_cluster() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5))
    assign = (x[:, 0] > 0.3).astype(np.int64)
    for chunk in (2048, 7):  # chunking rows does not change the values
        np.testing.assert_allclose(
            silhouette(torch.tensor(x), torch.tensor(assign), chunk).numpy(),
            silhouette_samples(x, assign), atol=1e-12,
        )  # fmt: skip
    labels = np.repeat([0, 1], 300)
    feats = rng.normal(size=(600, 16))
    poisoned = np.zeros(600, bool)
    poisoned[:30] = True
    feats[:30] += 8.0 * np.eye(16)[0]  # a small separate cluster in class 0
    ac = clustering_scores(torch.tensor(feats), torch.tensor(labels), dims=10, seed=0)
    assert np.array_equal(ac["small"].numpy()[:300], poisoned[:300])
    assert np.array_equal(ac["flag"].numpy(), poisoned)  # class 1 splits near half: no flag
    np.testing.assert_allclose(ac["size"].numpy()[:300], 30 / 300)
    assert roc_auc_score(poisoned, ac["score"].numpy()) > 0.99


# training, suite, store, report -------------------------------------------------------------
TRAIN = {"data": {"name": "fashion-mnist", "params": {"split": "train", "limit": 5000}},
         "magnitude": 400.0, "window": 14, "epochs": 8}  # fmt: skip
SUITE = f"""
name: backdoor-test
models:
  - {{name: ctrl-poisoned, params: {TRAIN}}}
data: {{name: fashion-mnist, params: {{split: test, limit: 2000}}}}
probes:
  - {{kind: diagnosis, name: backdoor, label: ctrl}}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from robustlab.report import write_report

    root = tmp_path_factory.mktemp("backdoor")
    store = Store(root / "runs.db")
    suite = Suite.from_yaml(SUITE)
    run_id = run_suite(suite, store, progress=False)
    html, _ = write_report(store, run_id, root / "out")
    df = store.records(run_id)
    info = {"suite": suite.model_dump(mode="json")}
    return {"df": df[df["kind"] == "diagnosis"], "html": Path(html).read_text(), "info": info}


@pytest.mark.slow
def test_poisoned_model_backdoor_records_and_report(run: dict[str, Any]) -> None:
    from robustlab.core.registry import models
    from robustlab.diagnose.features import extract
    from robustlab.report.sections.backdoor import Backdoor

    df = run["df"]
    test, train = df[df["x.role"] == "test"], df[df["x.role"] == "train"]
    assert (len(test), len(train)) == (2000, 5000)
    # recomputed from the model itself: clean and triggered predictions, ASR >= 90 %
    clf = models.create("ctrl-poisoned", TRAIN)
    data = datasets.create("fashion-mnist", {"split": "test", "limit": 2000})
    order = np.argsort(test["example_id"].to_numpy())
    pred = extract(clf, data.x, ())["logits"].argmax(1).numpy()
    trig = extract(clf, ctrl_trigger(data.x, 400.0, 14), ())["logits"].argmax(1).numpy()
    np.testing.assert_array_equal(test["pred"].astype(int).to_numpy()[order], pred)
    np.testing.assert_array_equal(test["x.triggered_pred"].astype(int).to_numpy()[order], trig)
    nt = data.y.numpy() != 0
    asr = float((trig[nt] == 0).mean())
    assert asr >= 0.9
    acc = float((pred == data.y.numpy()).mean())
    assert acc > 0.8
    # training role: ground truth and scores as the functions give them on the model's features
    poisoned = train["x.poisoned"].astype(float).to_numpy() == 1
    assert poisoned.sum() == 50
    sec = Backdoor().build(df, run["info"])
    assert sec is not None
    (row,) = sec["rows"]
    assert row["asr"] == pytest.approx(asr) and row["accuracy"] == pytest.approx(acc)
    for d in ("spectral", "clustering"):
        s = train[f"x.{d}"].astype(float).to_numpy()
        assert row["auroc"][d] == pytest.approx(roc_auc_score(poisoned, s), abs=1e-12)
        tg = train["x.label"].astype(int).to_numpy() == 0
        assert row["auroc_target"][d] == pytest.approx(roc_auc_score(poisoned[tg], s[tg]))
    assert row["auroc"]["spectral"] > 0.9
    html = run["html"]
    assert "Backdoor: CTRL trigger and poison detection" in html
    assert "<svg" in html.split("Backdoor: CTRL trigger")[-1].split("</section>")[0]
    assert f"{100 * asr:.1f}" in html


def test_backdoor_diagnosis_bad_input() -> None:
    with pytest.raises(ConfigError, match="unknown defence 'pca'"):
        diagnoses.create("backdoor", {"defences": ["pca"]})
    d = diagnoses.create("backdoor", {})
    from robustlab.core.registry import models

    with pytest.raises(CapabilityError, match="no training-data provenance"):
        d.check_model(models.create("small-cnn", {"side": 28}))
    with pytest.raises(ConfigError, match="has no ground truth fields\\['poisoned'\\]"):
        data = datasets.create("fashion-mnist", {"split": "test", "limit": 10})
        d.check_data(data, {"train": data})
    with pytest.raises(ConfigError, match="target class 12 is not in 0..9"):
        t = diagnoses.create("backdoor", {"target": 12, "train": FM})
        t.check_model(models.create("small-cnn", {"side": 28}))


def test_suite_refused_before_running(tmp_path: Path) -> None:
    from robustlab.runner.validation import validate_suite

    # training data without ground truth: refused in validation
    bad = SUITE.replace("label: ctrl}", f"label: ctrl, params: {{train: {FM}}}}}")
    with pytest.raises(ConfigError, match="has no ground truth fields"):
        validate_suite(Suite.from_yaml(bad))
    # a model that was not trained on poisoned data (no provenance) and no train set named
    plain = SUITE.replace(f"{{name: ctrl-poisoned, params: {TRAIN}}}", "{name: small-cnn}")
    store = Store(tmp_path / "runs.db")
    with pytest.raises(CapabilityError, match="no training-data provenance"):
        run_suite(Suite.from_yaml(plain), store, progress=False)
