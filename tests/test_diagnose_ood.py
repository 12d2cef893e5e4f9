"""The 'ood' diagnosis (S30): detector scores against pytorch-ood, scikit-learn (Lee et al.'s
covariance) and brute force; the suite -> store -> report path; bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import datasets, diagnoses, models
from robustlab.diagnose.base import ROLE_OFFSET
from robustlab.diagnose.features import extract
from robustlab.diagnose.ood import (
    energy_score,
    fit_gaussians,
    knn_score,
    mahalanobis_score,
    maxlogit_score,
    msp_score,
    odin_score,
)
from robustlab.metrics.detection import fpr_at_tpr
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OOD = "{name: fashion-mnist, params: {split: test, limit: 300, size: 8}}"
SUITE = f"""
name: ood-test
models: [{{name: digits-cnn}}, {{name: digits-logreg}}]
data: {{name: digits, params: {{split: test}}}}
probes:
  - {{kind: diagnosis, name: ood, label: fashion, params: {{ood: {OOD}, k: 10}}}}
  - {{kind: diagnosis, name: ood, label: failure, params: {{detectors: [msp, energy]}}}}
"""


@pytest.fixture
def pood(pytorch_ood: None) -> Any:
    """pytorch-ood's detectors (see the ``pytorch_ood`` fixture in conftest.py)."""
    import pytorch_ood.detector as det

    return det


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    model = models.create("digits-cnn", {"seed": 0})
    test = datasets.create("digits", {"split": "test"})
    train = datasets.create("digits", {"split": "train"})
    ood = datasets.create("fashion-mnist", {"split": "test", "limit": 300, "size": 8})
    feats = {k: extract(model, d.x, ("penultimate",)) for k, d in
             (("test", test), ("train", train), ("ood", ood))}  # fmt: skip
    return {"model": model, "test": test, "train": train, "ood": ood, "feats": feats}


def test_logit_scores_equal_pytorch_ood(setup: dict[str, Any], pood: Any) -> None:
    z = torch.cat([setup["feats"]["test"]["logits"], setup["feats"]["ood"]["logits"]])
    # pytorch-ood's outlier scores are higher = more OOD: ours are their negatives
    torch.testing.assert_close(msp_score(z), -pood.MaxSoftmax.score(z).double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(maxlogit_score(z), -pood.MaxLogit.score(z).double())
    for t in (1.0, 2.5):
        ref = -pood.EnergyBased.score(z, t=t).double()
        torch.testing.assert_close(energy_score(z, t), ref, atol=1e-5, rtol=1e-6)


def test_odin_equals_pytorch_ood(setup: dict[str, Any], pood: Any) -> None:
    x = torch.cat([setup["test"].x[:100], setup["ood"].x[:100]])
    module = setup["model"].module
    for t, eps in ((1000.0, 0.0014), (10.0, 0.01)):
        ref = -pood.ODIN(module, eps=eps, temperature=t).predict(x).double()
        got = odin_score(setup["model"], x, t, eps, chunk=64)
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    # the perturbation matters: eps = 0 is the temperature-scaled MSP of the clean input
    clean = torch.softmax(module(x).double() / 1000.0, 1).amax(1)
    torch.testing.assert_close(odin_score(setup["model"], x, 1000.0, 0.0), clean)


def test_knn_equals_pytorch_ood_and_brute_force(setup: dict[str, Any], pood: Any) -> None:
    bank = setup["feats"]["train"]["penultimate"]
    q = torch.cat([setup["feats"]["test"]["penultimate"], setup["feats"]["ood"]["penultimate"]])
    got = knn_score(q, bank, k=10, chunk=100)
    ref = pood.KNN(None, k=10).fit_features(bank, torch.zeros(len(bank))).predict_features(q)
    torch.testing.assert_close(got, -ref.double(), atol=1e-5, rtol=0)
    # exact per-example reference: sort all distances of normalised vectors, take the k-th
    a = q[:40].double().numpy()
    b = bank.double().numpy()
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    brute = [-np.sort(np.linalg.norm(b - row, axis=1))[9] for row in a]
    np.testing.assert_allclose(got[:40].numpy(), brute, atol=1e-7)


def test_mahalanobis_equals_lee_reference_and_pytorch_ood(setup: dict[str, Any], pood: Any) -> None:
    from sklearn.covariance import EmpiricalCovariance

    f_fit, y = setup["feats"]["train"]["penultimate"], setup["train"].y
    q = torch.cat([setup["feats"]["test"]["penultimate"], setup["feats"]["ood"]["penultimate"]])
    got = mahalanobis_score(q, *fit_gaussians(f_fit, y), chunk=128)
    # Lee et al.'s code: class means, EmpiricalCovariance (pinvh) of the class-centred features
    ff, yy, qq = f_fit.double().numpy(), y.numpy(), q.double().numpy()
    means = np.stack([ff[yy == c].mean(0) for c in range(10)])
    cov = EmpiricalCovariance(assume_centered=False).fit(ff - means[yy])
    d = np.stack([((qq - m) @ cov.precision_ * (qq - m)).sum(1) for m in means], 1)
    np.testing.assert_allclose(got.numpy(), -d.min(1), rtol=1e-6, atol=1e-6)
    # pytorch-ood inverts the (unnormalised) scatter plus a 1e-6 ridge, so it needs a full-rank
    # covariance: compare on the units that are alive (ReLU units dead on all fitting examples
    # have zero variance); its score is 0.5 min_c d_c with the scatter, i.e. ours / (-2N)
    live = f_fit.std(0) > 0
    assert 0 < int(live.sum()) < f_fit.shape[1]  # the case is real: some units are dead
    ours = mahalanobis_score(q[:, live], *fit_gaussians(f_fit[:, live], y))
    ref = pood.Mahalanobis(None).fit_features(f_fit[:, live], y).predict_features(q[:, live])
    torch.testing.assert_close(ours, -2 * len(f_fit) * ref.double(), rtol=1e-4, atol=1e-6)


def test_mahalanobis_preprocessing_equals_pytorch_ood(setup: dict[str, Any], pood: Any) -> None:
    """Lee et al.'s input preprocessing vs pytorch-ood's MahalanobisODIN, on an encoder that
    reads the live penultimate units (its ridge-inverted scatter needs a full-rank covariance)."""
    from robustlab.diagnose.features import capture
    from robustlab.diagnose.ood import mahalanobis_preprocessed_score
    from robustlab.models.torch_adapter import TorchClassifier

    model, f_fit, y = setup["model"], setup["feats"]["train"]["penultimate"], setup["train"].y
    live = f_fit.std(0) > 0
    x = torch.cat([setup["test"].x[:60], setup["ood"].x[:60]])

    def encoder(xb: torch.Tensor) -> torch.Tensor:  # the live penultimate units, with a graph
        with capture(model, ["penultimate"], detach=False) as cap:
            model.logits(xb)
        return cap["penultimate"][0][:, live]

    class LiveNet(torch.nn.Module):  # its last Linear reads the live units
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(int(live.sum()), 10)

        def forward(self, xb: torch.Tensor) -> torch.Tensor:
            return self.head(encoder(xb))

    live_model = TorchClassifier(LiveNet(), 10)
    gauss = fit_gaussians(f_fit[:, live], y)
    for eps in (0.002, 0.02):
        got = mahalanobis_preprocessed_score(live_model, x, "penultimate", *gauss, eps, chunk=50)
        ref = pood.MahalanobisODIN(encoder, eps=eps)
        ref = ref.fit_features(f_fit[:, live], y).predict(x).double()
        torch.testing.assert_close(got, -2 * len(f_fit) * ref, rtol=1e-4, atol=1e-6)
        if eps == 0.02:  # the step moves the scores: ID inputs towards their class means
            plain = mahalanobis_score(encoder(x).detach(), *gauss)
            assert (got[:60] > plain[:60]).float().mean() > 0.9
    # eps = 0 is the plain score
    plain = mahalanobis_score(extract(live_model, x, ("penultimate",))["penultimate"], *gauss)
    torch.testing.assert_close(
        mahalanobis_preprocessed_score(live_model, x, "penultimate", *gauss, 0.0), plain
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from robustlab.report import write_report

    root = tmp_path_factory.mktemp("ood")
    store = Store(root / "runs.db")
    run_id = run_suite(Suite.from_yaml(SUITE), store, progress=False)
    html, _ = write_report(store, run_id, root / "out")
    df = store.records(run_id)
    return {"df": df[df["kind"] == "diagnosis"], "html": Path(html).read_text(), "root": root}


def test_suite_records_roles_ids_and_scores(run: dict[str, Any], setup: dict[str, Any]) -> None:
    df = run["df"]
    cnn = df[(df["model"] == "digits-cnn") & (df["probe"] == "fashion")]
    test, ood = cnn[cnn["x.role"] == "test"], cnn[cnn["x.role"] == "ood"]
    assert (len(test), len(ood)) == (len(setup["test"]), 300)
    # ids: the scored data keeps its ids, the OOD set's move by ROLE_OFFSET: no collision
    assert sorted(test["example_id"]) == sorted(setup["test"].ids.tolist())
    assert sorted(ood["example_id"]) == sorted((setup["ood"].ids + ROLE_OFFSET).tolist())
    assert ood["correct"].isna().all() and test["correct"].notna().all()
    # all six detectors for a torch model; their scores equal the functions on the same features
    cols = sorted(c for c in cnn.columns if c.startswith("x.score_") and cnn[c].notna().all())
    assert cols == sorted(f"x.score_{d}" for d in
                          ("msp", "maxlogit", "energy", "mahalanobis", "knn", "odin"))  # fmt: skip
    order = np.argsort(test["example_id"].to_numpy())
    np.testing.assert_allclose(
        test["x.score_msp"].to_numpy(float)[order],
        msp_score(setup["feats"]["test"]["logits"]).numpy(), rtol=1e-9,
    )  # fmt: skip
    bank = setup["feats"]["train"]["penultimate"]
    np.testing.assert_allclose(
        test["x.score_knn"].to_numpy(float)[order],
        knn_score(setup["feats"]["test"]["penultimate"], bank, 10).numpy(), rtol=1e-9,
    )  # fmt: skip
    acc = (setup["feats"]["test"]["logits"].argmax(1) == setup["test"].y).double().mean()
    assert test["correct"].mean() == pytest.approx(float(acc))
    # the black-box model runs the logit detectors only (default: all it supports)
    lr = df[(df["model"] == "digits-logreg") & (df["probe"] == "fashion")]
    have = {c for c in lr.columns if c.startswith("x.score_") and lr[c].notna().any()}
    assert have == {"x.score_msp", "x.score_maxlogit", "x.score_energy"}
    # the failure-only probe: role test only, two detectors
    fail = df[df["probe"] == "failure"]
    assert set(fail["x.role"]) == {"test"}
    assert {c for c in fail.columns if c.startswith("x.score_") and fail[c].notna().any()} == {
        "x.score_msp",
        "x.score_energy",
    }
    # on real data the feature detectors separate Fashion-MNIST from the digits
    s = np.r_[
        test["x.score_mahalanobis"].to_numpy(float), ood["x.score_mahalanobis"].to_numpy(float)
    ]
    pos = np.r_[np.ones(len(test), bool), np.zeros(len(ood), bool)]
    assert roc_auc_score(pos, s) > 0.85


def test_report_section_numbers_equal_sklearn(run: dict[str, Any]) -> None:
    from robustlab.report.sections.detection import Detection

    df = run["df"]
    info = {"suite": Suite.from_yaml(SUITE).model_dump(mode="json")}
    data = Detection().build(df, info)
    assert data is not None
    rows = {(r["model"], r["probe"], r["detector"]): r for r in data["rows"]}
    assert len(rows) == 6 + 3 + 2 + 2  # cnn: 6 detectors, logreg: 3; failure probe: 2 each
    g = df[(df["model"] == "digits-cnn") & (df["probe"] == "fashion")]
    test, ood = g[g["x.role"] == "test"], g[g["x.role"] == "ood"]
    for det in ("msp", "energy", "mahalanobis", "knn", "odin"):
        r = rows[("digits-cnn", "fashion", det)]
        s_id, s_ood = test[f"x.score_{det}"].to_numpy(float), ood[f"x.score_{det}"].to_numpy(float)
        pos = np.r_[np.ones(len(s_id), bool), np.zeros(len(s_ood), bool)]
        s = np.r_[s_id, s_ood]
        assert r["ood"]["auroc"] == pytest.approx(roc_auc_score(pos, s), abs=1e-12)
        assert r["ood"]["aupr"] == pytest.approx(average_precision_score(pos, s), abs=1e-12)
        assert r["ood"]["lo"] <= r["ood"]["auroc"] <= r["ood"]["hi"]
        ok = test["correct"].to_numpy(float) == 1
        assert r["fail"]["auroc"] == pytest.approx(roc_auc_score(ok, s_id), abs=1e-12)
        assert r["fail"]["fpr95"] == fpr_at_tpr(s_id, ok)
    assert rows[("digits-cnn", "failure", "msp")]["ood"] is None
    html = run["html"]
    assert "Failure and OOD detection" in html and "OOD ROC" in html
    assert f"{rows[('digits-cnn', 'fashion', 'knn')]['ood']['auroc']:.3f}"[:4] in html


def test_bad_input() -> None:
    from robustlab.runner.validation import validate_suite

    with pytest.raises(
        ConfigError, match=r"unknown detector 'mahalanobs'; did you mean 'mahalanobis'"
    ):
        diagnoses.create("ood", {"detectors": ["mahalanobs"]})
    lr = models.create("digits-logreg", {"seed": 0})
    with pytest.raises(CapabilityError, match=r"\['knn'\].*black-box: use msp, maxlogit, energy"):
        diagnoses.create("ood", {"detectors": ["msp", "knn"]}).check_model(lr)
    # an OOD set with another input shape: refused before anything runs
    bad = SUITE.replace("size: 8", "size: 12")
    with pytest.raises(ConfigError, match=r"ood set 'fashion-mnist-test-12px' has inputs of shape"):
        validate_suite(Suite.from_yaml(bad))
    # mahalanobis/knn fit on the data's train split by default; scoring the train split itself
    # (or a dataset without splits) needs an explicit fit set
    from types import SimpleNamespace

    from robustlab.diagnose.base import DiagnosisEnv
    from robustlab.runner import ComponentSpec

    diag = diagnoses.create("ood", {})
    unit = SimpleNamespace(probe=None, data=ComponentSpec(name="digits", params={"split": "test"}))
    env = DiagnosisEnv(unit, None, None)  # type: ignore[arg-type]
    assert diag.fit_spec(env) == {"name": "digits", "params": {"split": "train"}}
    unit.data = ComponentSpec(name="digits", params={"split": "train"})
    with pytest.raises(ConfigError, match=r"ood \(mahalanobis, knn\): .*no other train split"):
        diag.fit_spec(env)
    unit.data = ComponentSpec(name="skimage-photos", params={})
    with pytest.raises(ConfigError, match="name the training set with fit"):
        diag.fit_spec(env)
    given = {"name": "digits", "params": {"split": "all"}}
    assert diagnoses.create("ood", {"fit": given}).fit_spec(env) == given


class NaNModel:
    """digits-cnn whose outputs are NaN on some inputs (a numerically broken model)."""

    def __init__(self, inner: Any, all_nan: bool = False) -> None:
        self.module = inner.module
        self.capabilities = inner.capabilities
        self.all_nan = all_nan

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        bad = (x.flatten(1)[:, 20] > 0.5) | self.all_nan
        return torch.where(bad[:, None], float("nan"), 0.0) + self.module(x)


def _env(tmp: str) -> Any:
    from robustlab.core.rng import ExampleRNG
    from robustlab.diagnose.base import DiagnosisEnv
    from robustlab.runner.context import Context
    from robustlab.runner.plan import data_key, plan

    suite = Suite.from_yaml(SUITE)
    unit = next(u for u in plan(suite, {data_key(suite.data): 1}) if u.kind == "diagnosis")
    ctx = Context()
    ctx.start_run(tmp)
    data = ctx.data(suite.data)
    return DiagnosisEnv(unit, ctx, ExampleRNG.from_seed(0, data.ids)), data


def test_nan_logits_become_error_records(setup: dict[str, Any]) -> None:
    diag = diagnoses.create("ood", {"detectors": ["msp", "knn", "mahalanobis"], "k": 10,
                                    "ood": {"name": "fashion-mnist", "params": {
                                        "split": "test", "limit": 300, "size": 8}}})  # fmt: skip
    env, data = _env("nan-run")
    model = NaNModel(setup["model"])
    test, ood = diag.run(model, data, 0.0, env)
    bad = (data.x.flatten(1)[:, 20] > 0.5).numpy()
    assert 0 < bad.sum() < len(bad)
    err = np.array([e is not None for e in test.error])
    np.testing.assert_array_equal(err, bad)
    assert "non-finite model outputs" in next(e for e in test.error if e)
    assert torch.isnan(test.correct[bad]).all() and not torch.isnan(test.correct[~bad]).any()
    for det in ("msp", "knn", "mahalanobis"):
        s = np.array(test.extra[f"score_{det}"], dtype=float)
        assert np.isnan(s[bad]).all() and np.isfinite(s[~bad]).all()
    # the finite examples score as with the healthy model (fit set: NaN rows left out)
    ref = msp_score(setup["feats"]["test"]["logits"]).numpy()
    np.testing.assert_allclose(np.array(test.extra["score_msp"], float)[~bad], ref[~bad])
    assert ood.error is not None and len(ood.data) == 300
    # nothing finite to fit on: a clear error
    env2, _ = _env("nan-run-2")
    with pytest.raises(ConfigError, match="every example of the fit set 'digits-train' has non"):
        diag.run(NaNModel(setup["model"], all_nan=True), data, 0.0, env2)


def test_ood_and_calibration_share_one_pass_per_set(setup: dict[str, Any]) -> None:
    """With the run's feature cache, the ood unit (all logit and feature detectors) and a
    calibration unit cost one forward pass over the data, one over the OOD set and one over the
    fitting set, in either order."""
    from robustlab.core.rng import ExampleRNG
    from robustlab.diagnose.base import DiagnosisEnv
    from robustlab.runner.context import Context
    from robustlab.runner.plan import data_key, plan

    if "calibration" not in diagnoses.names():
        pytest.skip("no calibration diagnosis registered")
    suite = Suite.from_yaml(f"""
name: shared
models: [{{name: digits-cnn}}]
data: {{name: digits, params: {{split: test}}}}
probes:
  - {{kind: diagnosis, name: ood, params: {{detectors: [msp, maxlogit, energy, mahalanobis, knn],
      ood: {OOD}, k: 10}}}}
  - {{kind: diagnosis, name: calibration}}
""")
    units = [u for u in plan(suite, {data_key(suite.data): 1}) if u.kind == "diagnosis"]
    inner = setup["model"]

    class Counting:
        def __init__(self) -> None:
            self.module, self.capabilities, self.seen = inner.module, inner.capabilities, 0

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            self.seen += len(x)
            return inner.logits(x)

    sizes = len(setup["test"]) + 300 + len(setup["train"])
    for order in (units, units[::-1]):
        ctx, model = Context(), Counting()
        ctx.start_run(f"shared-{id(order)}")
        data = ctx.data(suite.data)
        for u in order:
            diag = ctx.component(diagnoses, u.probe)
            diag.run(model, data, 0.0, DiagnosisEnv(u, ctx, ExampleRNG.from_seed(0, data.ids)))
        assert model.seen == sizes  # every example through the model exactly once
