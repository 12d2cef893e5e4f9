"""Calibration, calibration under shift and selective prediction (S30): metrics checked against
torchmetrics, netcal, scikit-learn, hand computations and brute force; the ``calibration``
diagnosis end to end (suite -> store -> records -> report) on real digits models."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models
from robustlab.metrics import calibration as cal

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits_outputs() -> tuple[np.ndarray, np.ndarray]:
    """Real logits of the digits MLP on the 360 digits test images, and their labels."""
    mlp = models.create("digits-mlp", {"seed": 0})
    data = datasets.get("digits")(split="test")
    with torch.no_grad():
        z = mlp.logits(data.x).double().numpy()
    return z, data.y.numpy()


def _softened(z: np.ndarray) -> np.ndarray:
    """The logits at T = 3: confidences well below 1.0 even in float32 (torchmetrics' precision)."""
    return z / 3.0


# --- ECE / MCE against peer libraries ---------------------------------------------------------


@pytest.mark.parametrize("bins", [10, 15])
def test_ece_mce_equal_width_match_torchmetrics(digits_outputs, bins: int) -> None:
    from torchmetrics.classification import MulticlassCalibrationError

    z, y = digits_outputs
    z = _softened(z)
    s = cal.scores(z, y)
    conf, ok = s["confidence"], s["pred"] == y
    edges = np.linspace(0, 1, bins + 1)
    # torchmetrics bins [lo, hi) in float32, ours (lo, hi]: no confidence may sit on an edge
    assert np.abs(conf[:, None] - edges[None]).min() > 1e-5
    p = torch.softmax(torch.from_numpy(z), 1)
    ref = MulticlassCalibrationError(num_classes=10, n_bins=bins, norm="l1")(p, torch.from_numpy(y))
    ref_max = MulticlassCalibrationError(num_classes=10, n_bins=bins, norm="max")(
        p, torch.from_numpy(y)
    )
    assert cal.ece(conf, ok, bins) == pytest.approx(ref.item(), abs=2e-6)
    assert cal.mce(conf, ok, bins) == pytest.approx(ref_max.item(), abs=2e-6)
    assert cal.ece(conf, ok, bins) > 0.01  # a real, non-trivial miscalibration is compared


@pytest.mark.parametrize("bins", [10, 15])
def test_equal_width_and_equal_mass_match_netcal(digits_outputs, bins: int) -> None:
    from netcal.metrics import ECE, MCE

    z, y = digits_outputs
    for zz in (z, _softened(z)):
        s = cal.scores(zz, y)
        conf, ok = s["confidence"], s["pred"] == y
        assert len(np.unique(conf)) == len(conf) and len(conf) % bins == 0  # netcal's quantiles
        p = np.exp(cal.log_softmax(zz))
        assert cal.ece(conf, ok, bins, "width") == pytest.approx(ECE(bins).measure(p, y), abs=1e-12)
        assert cal.mce(conf, ok, bins, "width") == pytest.approx(MCE(bins).measure(p, y), abs=1e-12)
        mass = ECE(bins, equal_intervals=False).measure(p, y)
        mass_max = MCE(bins, equal_intervals=False).measure(p, y)
        assert cal.ece(conf, ok, bins, "mass") == pytest.approx(mass, abs=1e-12)
        assert cal.mce(conf, ok, bins, "mass") == pytest.approx(mass_max, abs=1e-12)
        rel = cal.reliability(conf, ok, bins, "mass")
        assert (rel.count == len(conf) // bins).all()


def test_equal_mass_ties_stay_in_one_bin_hand_case() -> None:
    conf = np.array([0.9, 0.2, 0.2, 0.2])
    ok = np.array([1, 1, 0, 0])
    # 2 bins of 2 would split the three 0.2s: the cut moves to the end of the run ->
    # bins {0.2 x3: accuracy 1/3} and {0.9: accuracy 1}
    want = 3 / 4 * abs(1 / 3 - 0.2) + 1 / 4 * abs(1 - 0.9)
    assert cal.ece(conf, ok, 2, "mass") == pytest.approx(want, abs=1e-15)
    assert cal.mce(conf, ok, 2, "mass") == pytest.approx(1 / 3 - 0.2, abs=1e-15)
    perm = [2, 0, 3, 1]  # order of the inputs does not matter
    assert cal.ece(conf[perm], ok[perm], 2, "mass") == cal.ece(conf, ok, 2, "mass")
    # equal width, right-closed bins (Guo et al.): 0.2 lies in (0.1, 0.2], hand computed
    rel = cal.reliability([0.2, 0.25, 1.0, 0.0], [1, 0, 1, 1], 5)
    assert rel.count.tolist() == [2, 1, 0, 0, 1]
    assert cal.ece([0.2, 0.25, 1.0, 0.0], [1, 0, 1, 1], 5) == pytest.approx(
        2 / 4 * abs(1 - 0.1) + 1 / 4 * 0.25 + 0.0
    )


def test_bin_index_and_reliability_edges_hand_case() -> None:
    # equal width, 4 bins: edges 0, 1/4, 1/2, 3/4, 1 (right-closed; 0.5 lies in (0.25, 0.5]); the
    # two top bins stay empty but are still reported, with the edges as lo/hi
    conf, ok = [0.0, 0.1, 0.3, 0.5], [1, 0, 1, 1]
    assert cal.bin_index(conf, 4).tolist() == [0, 0, 1, 1]
    rel = cal.reliability(conf, ok, 4)
    assert rel.count.tolist() == [2, 2, 0, 0]
    assert rel.lo.tolist() == [0.0, 0.25, 0.5, 0.75] and rel.hi.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert rel.confidence[:2].tolist() == pytest.approx([0.05, 0.4], abs=1e-15)
    assert rel.accuracy[:2].tolist() == [0.5, 1.0] and np.isnan(rel.accuracy[2:]).all()
    # equal mass, 3 bins of 6: cuts after 2 and 4 sorted examples; the second moves to the end of
    # the run of 0.4s -> {0.1, 0.2}, {0.3, 0.4, 0.4}, {0.9}; lo/hi are each bin's min/max
    conf, ok = np.array([0.4, 0.9, 0.1, 0.3, 0.2, 0.4]), np.array([1, 1, 0, 0, 1, 1])
    assert cal.bin_index(conf, 3, "mass").tolist() == [1, 2, 0, 1, 0, 1]
    rel = cal.reliability(conf, ok, 3, "mass")
    assert rel.count.tolist() == [2, 3, 1]
    assert rel.lo.tolist() == [0.1, 0.3, 0.9] and rel.hi.tolist() == [0.2, 0.4, 0.9]
    assert rel.accuracy.tolist() == pytest.approx([1 / 2, 2 / 3, 1.0], abs=1e-15)
    # a tie run at the top: the only cut would split the three 0.5s, moves to n and is dropped ->
    # one bin (fewer bins than asked, none empty)
    rel = cal.reliability([0.5, 0.1, 0.5, 0.5], [1, 0, 0, 1], 2, "mass")
    assert cal.bin_index([0.5, 0.1, 0.5, 0.5], 2, "mass").tolist() == [0, 0, 0, 0]
    assert rel.count.tolist() == [4] and rel.lo.tolist() == [0.1] and rel.hi.tolist() == [0.5]
    # the smallest confidence alone below a tie run: two bins, not refused as all-equal
    assert cal.bin_index([0.9, 0.2, 0.9], 2, "mass").tolist() == [1, 0, 1]
    # as many bins as examples (allowed): one example per bin, the first bin included
    assert cal.bin_index([0.4, 0.1, 0.3, 0.2], 4, "mass").tolist() == [3, 0, 2, 1]
    rel = cal.reliability([0.4, 0.1, 0.3, 0.2], [1, 0, 0, 1], 4, "mass")
    assert rel.count.tolist() == [1, 1, 1, 1] and rel.lo.tolist() == rel.hi.tolist()
    assert rel.hi.tolist() == [0.1, 0.2, 0.3, 0.4]


# --- Brier, NLL against scikit-learn -----------------------------------------------------------


def test_brier_and_nll_match_scikit_learn(digits_outputs) -> None:
    from sklearn.metrics import brier_score_loss, log_loss

    z, y = digits_outputs
    for t in (1.0, 2.5):
        s = cal.scores(z, y, t)
        p = torch.softmax(torch.from_numpy(z / t), 1).numpy()
        ref = brier_score_loss(y, p, labels=list(range(10)), scale_by_half=False)
        assert s["brier"].mean() == pytest.approx(ref, rel=1e-10)
        assert s["nll"].mean() == pytest.approx(log_loss(y, p, labels=list(range(10))), rel=1e-6)
        assert (s["brier"] >= 0).all() and (s["brier"] <= 2).all()


# --- risk-coverage and AURC ----------------------------------------------------------------------


def test_aurc_hand_case_and_excess() -> None:
    conf, ok = [0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]
    cov, risk = cal.risk_coverage(conf, ok)
    assert cov.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk.tolist() == pytest.approx([0.0, 1 / 2, 1 / 3, 2 / 4])
    assert cal.aurc(conf, ok) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    ideal = (0 + 0 + 1 / 3 + 2 / 4) / 4  # both correct first
    assert cal.excess_aurc(conf, ok) == pytest.approx(cal.aurc(conf, ok) - ideal)
    assert cal.excess_aurc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == pytest.approx(0.0)


def test_aurc_ties_are_the_average_over_tie_orders() -> None:
    conf = np.array([0.7, 0.9, 0.7, 0.7, 0.5, 0.9])
    ok = np.array([1, 0, 0, 1, 0, 1])
    runs = [np.flatnonzero(conf == v) for v in (0.9, 0.7, 0.5)]  # by decreasing confidence
    curves = []
    for orders in itertools.product(*(itertools.permutations(r) for r in runs)):
        err = 1 - ok[np.concatenate(orders)]
        curves.append(np.cumsum(err) / np.arange(1, len(err) + 1))
    _, risk = cal.risk_coverage(conf, ok)
    assert risk == pytest.approx(np.mean(curves, axis=0), abs=1e-15)
    assert cal.aurc(conf, ok) == pytest.approx(np.mean(curves), abs=1e-15)


# --- temperature scaling -------------------------------------------------------------------------


def test_temperature_minimises_nll(digits_outputs) -> None:
    from scipy.optimize import minimize_scalar

    z, y = digits_outputs
    z = z * 2.0  # an over-confident copy: T must come out near 2x the original's
    fit = cal.fit_temperature(z, y)
    t = fit.temperature
    assert not fit.at_bound and fit.nll_after < fit.nll_before
    assert abs(cal.nll_derivative(z, y, 1 / t)) < 1e-9  # the NLL's derivative in 1/T vanishes

    def nll(temp: float) -> float:
        return float(cal.scores(z, y, temp)["nll"].mean())

    grid = np.linspace(0.5 * t, 1.5 * t, 401)
    assert nll(t) <= min(nll(g) for g in grid) + 1e-12
    ref = minimize_scalar(nll, bounds=(0.05, 20), method="bounded", options={"xatol": 1e-10})
    assert t == pytest.approx(ref.x, rel=1e-6)
    assert fit.temperature == pytest.approx(2 * cal.fit_temperature(z / 2, y).temperature, rel=1e-9)


def test_temperature_at_bound_without_errors() -> None:
    z = np.array([[3.0, 0.0], [0.0, 2.0]])
    fit = cal.fit_temperature(z, [0, 1])  # no errors: the NLL falls all the way to T -> 0
    assert fit.at_bound and fit.temperature == pytest.approx(0.01)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: cal.ece([0.5, 0.6], [1, 0], 0), "n_bins must be an integer >= 1"),
        (lambda: cal.ece([0.5, 0.6], [1, 0], 3, "mass"), "3 equal-mass bins for 2 examples"),
        (lambda: cal.ece([0.7, 0.7, 0.7], [1, 0, 1], 2, "mass"), "all 3 confidences equal 0.7"),
        (lambda: cal.ece([0.5, float("nan")], [1, 0], 2), "NaN or infinite confidences"),
        (lambda: cal.ece([0.5, 1.2], [1, 0], 2), r"must lie in \[0, 1\]"),
        (lambda: cal.ece([], [], 2), "no examples"),
        (lambda: cal.ece([0.5], [1], 2, "quantile"), "binning must be 'width' or 'mass'"),
        (lambda: cal.scores([[0.0, float("nan")]], [0]), "NaN or infinite logits"),
        (lambda: cal.scores([[0.0, 1.0]], [0], 0.0), "temperature must be > 0"),
        (lambda: cal.scores([[0.0, 1.0]], [0], -1.0), "temperature must be > 0"),
        (lambda: cal.scores([[0.0, 1.0]], [0], float("inf")), "temperature must be > 0"),
        (lambda: cal.fit_temperature(np.zeros((0, 3)), []), "no held-out examples"),
    ],
)
def test_degenerate_bins_and_non_finite_input_are_refused(call, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call()
    # all-equal confidences are fine with equal-width bins and one equal-mass bin
    assert cal.ece([0.7, 0.7, 0.7], [1, 0, 1], 2) == pytest.approx(abs(2 / 3 - 0.7))
    assert cal.ece([0.7, 0.7, 0.7], [1, 0, 1], 1, "mass") == pytest.approx(abs(2 / 3 - 0.7))


def _suite(probes, model: str = "digits-mlp"):  # type: ignore[no-untyped-def]
    from robustlab.runner import ComponentSpec, ModelSpec, Suite

    return Suite(
        name="calibration",
        models=[ModelSpec(name=model)],
        data=ComponentSpec(name="digits", params={"split": "test"}),
        probes=probes,
    )


def test_suite_errors_unknown_shift_levels_and_fit_data() -> None:
    from robustlab.runner import ProbeSpec
    from robustlab.runner.validation import validate_suite

    def probe(params, levels=None):  # type: ignore[no-untyped-def]
        kw = {"levels": levels} if levels is not None else {}
        return ProbeSpec(kind="diagnosis", name="calibration", params=params, **kw)

    with pytest.raises(ConfigError, match=r"unknown perturbations 'gausian_noise'.*gaussian_noise"):
        validate_suite(_suite([probe({"shift": {"name": "gausian_noise"}}, [0, 1])]))
    with pytest.raises(ConfigError, match="shift"):
        validate_suite(_suite([probe({"shift": "gaussian_noise"}, [0, 1])]))
    with pytest.raises(ConfigError, match="no shift given"):
        validate_suite(_suite([probe({}, [0, 2])]))
    with pytest.raises(ConfigError, match=r"severity"):
        validate_suite(_suite([probe({"shift": {"name": "gaussian_noise"}}, [0, 9])]))
    with pytest.raises(ConfigError, match="lies inside the scored data"):
        validate_suite(_suite([probe({"fit": {"name": "digits", "params": {"split": "test"}}})]))
    with pytest.raises(ConfigError, match="bins"):
        validate_suite(_suite([probe({"bins": 0})]))


# --- end to end on real models -------------------------------------------------------------------


def test_suite_to_store_records_and_report(tmp_path) -> None:
    from scipy.optimize import minimize_scalar
    from torchmetrics.classification import MulticlassCalibrationError

    from robustlab.core.records import frame
    from robustlab.core.registry import perturbations
    from robustlab.core.rng import ExampleRNG, seed_from
    from robustlab.report.build import build_report, write_report
    from robustlab.runner import ProbeSpec
    from robustlab.runner.runner import run_suite
    from robustlab.store import Store

    shift = {"name": "gaussian_noise"}
    probes = [
        ProbeSpec(kind="diagnosis", name="calibration", params={"shift": shift}, levels=[0, 5]),
        ProbeSpec(kind="diagnosis", name="calibration", label="cal-train",
                  params={"fit": {"name": "digits", "params": {"split": "train"}}}),
    ]  # fmt: skip
    suite = _suite(probes, model="digits-cnn")
    store = Store(f"sqlite:///{tmp_path}/runs.db")
    run = run_suite(suite, store, progress=False)
    df = frame(store.records(run))
    d = df[df["kind"] == "diagnosis"].sort_values("example_id")
    data = datasets.get("digits")(split="test")
    model = models.create("digits-cnn", {})
    ids = data.ids.numpy()
    with torch.no_grad():
        clean = model.logits(data.x).double()
    noise = perturbations.create("gaussian_noise", {})
    rng = ExampleRNG.from_seed(seed_from(suite.seed, "digits-cnn", 0, "calibration", 5.0), data.ids)
    with torch.no_grad():
        shifted = model.logits(noise(data.x, 5.0, rng)).double()
    y = data.y.numpy()

    c0 = d[(d["probe"] == "calibration") & (d["level"] == 0)]
    c5 = d[(d["probe"] == "calibration") & (d["level"] == 5)]
    assert c0["example_id"].tolist() == ids.tolist() == c5["example_id"].tolist()
    for rec, z in ((c0, clean), (c5, shifted)):
        p = torch.softmax(z, 1)
        assert rec["x.confidence"].to_numpy() == pytest.approx(p.max(1).values.numpy(), abs=1e-6)
        assert rec["x.nll"].to_numpy() == pytest.approx(-p[torch.arange(len(y)), y].log(), abs=1e-5)
        assert (rec["correct"].to_numpy() == (p.argmax(1).numpy() == y)).all()

    # 2-fold cross-fitting: each fold's T minimises the NLL of the *other* fold's clean logits
    fold = c0["x.fold"].to_numpy()
    assert sorted(set(fold)) == [0, 1] and abs((fold == 0).sum() - (fold == 1).sum()) <= 1
    for f in (0, 1):
        zo, yo = clean.numpy()[fold != f], y[fold != f]
        ref = minimize_scalar(lambda t, zo=zo, yo=yo: cal.scores(zo, yo, t)["nll"].mean(),
                              bounds=(0.05, 20),
                              method="bounded", options={"xatol": 1e-9}).x  # fmt: skip
        assert c0["x.temperature"].to_numpy()[fold == f] == pytest.approx(ref, rel=1e-5)
        t5, t0 = c5["x.temperature"].to_numpy(), c0["x.temperature"].to_numpy()
        assert (t5[fold == f] == t0[fold == f]).all()  # T is fitted on clean data only
    # the training split: no errors, so T hits its bound (flagged), as the report says
    tr = d[d["probe"] == "cal-train"]
    assert (tr["x.t_at_bound"] == 1).all() and tr["x.fit"].iloc[0].startswith("digits")

    # the report's numbers are the peer library's on the stored records
    rep = build_report(store, run)["extensions"]["calibration"]["data"]
    rows = {(r["probe"], r["level"]): r for r in rep["rows"]}
    tm = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")
    for level, z in ((0.0, clean), (5.0, shifted)):
        r = rows[("calibration", level)]
        ref = tm(torch.softmax(z, 1), torch.from_numpy(y)).item()
        assert r["ece_width"] == pytest.approx(ref, abs=1e-3)  # float32 edges in torchmetrics
        assert r["n"] == len(y)
    # calibration under shift: noise raises the ECE and the AURC of this model (real finding)
    assert rows[("calibration", 5.0)]["ece_width"] > 3 * rows[("calibration", 0.0)]["ece_width"]
    assert rows[("calibration", 5.0)]["aurc"] > rows[("calibration", 0.0)]["aurc"]
    html, _ = write_report(store, run, tmp_path / "report")
    page = html.read_text()
    assert "Calibration and selective prediction" in page and "risk-coverage" in page
    assert "gaussian_noise severity" in page and "T at a bound" in page
    assert math.isfinite(rows[("calibration", 0.0)]["nll_ts"])


def test_text_classifier_logits_only_and_underconfidence(tmp_path) -> None:
    """Texts: features give logits only (other layers refused); TF-IDF + logistic regression on
    BBC News is under-confident, so the fitted temperature is below 1 and lowers the ECE."""
    from robustlab.core.errors import CapabilityError
    from robustlab.core.records import frame
    from robustlab.diagnose.features import extract
    from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite
    from robustlab.runner.runner import run_suite
    from robustlab.store import Store

    data = datasets.create("bbc-news", {"split": "test", "limit": 300})
    model = models.create("tfidf-logreg", {})
    with pytest.raises(CapabilityError, match="only its 'logits'"):
        extract(model, data.x, ("input",))
    suite = Suite(
        name="calibration-text",
        models=[ModelSpec(name="tfidf-logreg")],
        data=ComponentSpec(name="bbc-news", params={"split": "test", "limit": 300}),
        probes=[ProbeSpec(kind="diagnosis", name="calibration",
                          params={"shift": {"name": "word_deletion"}}, levels=[0, 0.6])],
    )  # fmt: skip
    store = Store(f"sqlite:///{tmp_path}/runs.db")
    df = frame(store.records(run_suite(suite, store, progress=False)))
    d = df[(df["kind"] == "diagnosis") & (df["level"] == 0)].sort_values("example_id")
    p = torch.softmax(model.logits(data.x).double(), 1).max(1).values.numpy()
    assert d["x.confidence"].to_numpy() == pytest.approx(p[np.argsort(data.ids.numpy())], abs=1e-6)
    ok = d["correct"].to_numpy()
    assert (d["x.temperature"] < 1).all()  # under-confident: T < 1 sharpens
    assert d["x.confidence"].mean() < ok.mean()
    assert cal.ece(d["x.confidence_ts"], ok) < cal.ece(d["x.confidence"], ok) / 2


def _nan_rows_mlp() -> object:
    """The digits MLP, made to output NaN logits on heavily inked images (a failing model)."""
    from torch import nn

    from robustlab.models.torch_adapter import TorchClassifier

    base = models.create("digits-mlp", {"seed": 0})

    class NaNOnHeavyInk(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.net(x)
            heavy = x.flatten(1).mean(1) > 0.35
            return torch.where(heavy[:, None], torch.full_like(out, float("nan")), out)

    return TorchClassifier(NaNOnHeavyInk(base.module), 10, base.domain, name="nan-mlp")


def test_non_finite_logits_become_error_records(tmp_path) -> None:
    import contextlib

    from robustlab.core.records import frame
    from robustlab.runner import ProbeSpec
    from robustlab.runner.runner import run_suite
    from robustlab.store import Store

    with contextlib.suppress(ConfigError):  # registered once per process
        models.register("calibration-nan-mlp")(_nan_rows_mlp)
    data = datasets.get("digits")(split="test")
    heavy = (data.x.flatten(1).mean(1) > 0.35).numpy()
    assert 0 < heavy.sum() < len(heavy) / 4
    probe = ProbeSpec(kind="diagnosis", name="calibration")
    store = Store(f"sqlite:///{tmp_path}/runs.db")
    run = run_suite(_suite([probe], model="calibration-nan-mlp"), store, progress=False)
    df = frame(store.records(run))
    d = df[df["kind"] == "diagnosis"].sort_values("example_id")
    failed = d["error"].notna().to_numpy()
    assert (failed == heavy[np.argsort(data.ids.numpy())]).all()
    assert d["error"].dropna().str.contains("non-finite logits").all()
    assert d.loc[failed, "correct"].isna().all() and d.loc[failed, "x.confidence"].isna().all()
    assert d.loc[~failed, "x.confidence"].notna().all()
    # each fold's T is fitted on the other fold's examples that did not fail
    assert sum(set(d["x.fit_examples"].astype(int))) == (~failed).sum()
    from robustlab.report.build import build_report

    (row,) = build_report(store, run)["extensions"]["calibration"]["data"]["rows"]
    assert row["n"] == (~failed).sum()


@pytest.mark.slow
def test_fashion_cnn_overconfident_and_ece_grows_with_noise(tmp_path) -> None:
    """docs/diagnose-calibration.md's finding on Fashion-MNIST: the small CNN is over-confident
    (T > 1, temperature scaling lowers the clean ECE) and Gaussian noise multiplies its ECE."""
    from robustlab.report.build import build_report
    from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite
    from robustlab.runner.runner import run_suite
    from robustlab.store import Store

    cnn = {"base": {"name": "small-cnn", "params": {"side": 28}}, "epochs": 10}
    suite = Suite(
        name="calibration-fashion",
        models=[ModelSpec(name="trained", label="fashion-cnn", params=cnn)],
        data=ComponentSpec(name="fashion-mnist", params={"split": "test", "limit": 1000}),
        probes=[ProbeSpec(kind="diagnosis", name="calibration",
                          params={"shift": {"name": "gaussian_noise"}}, levels=[0, 4])],
    )  # fmt: skip
    store = Store(f"sqlite:///{tmp_path}/runs.db")
    run = run_suite(suite, store, progress=False)
    rows = {
        r["level"]: r for r in build_report(store, run)["extensions"]["calibration"]["data"]["rows"]
    }
    clean, noisy = rows[0.0], rows[4.0]
    assert min(clean["temperature"]) > 1.2
    assert clean["ece_width_ts"] < 0.75 * clean["ece_width"]
    assert clean["nll_ts"] < clean["nll"]
    assert noisy["ece_width"] > 4 * clean["ece_width"] and noisy["accuracy"] < clean["accuracy"]
