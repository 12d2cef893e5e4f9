"""The ``nap`` diagnosis (S27): records equal the library's mining/matching/verification, suite ->
store -> report, phase boundaries handled alike by ``verify`` and ``matches``, bad input."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import robustlab.certify.milp as milp
from robustlab.certify.milp import COUNTEREXAMPLE, ROBUST, UNDECIDED, follows_phases, relu_chain
from robustlab.certify.nap import NAP, matches, mine_naps, nap_recall, pre_activations, verify_nap
from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.records import frame
from robustlab.core.registry import datasets, models
from robustlab.core.types import Domain
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.report import build_report, write_report
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SUITE = """
name: nap-test
models: [{name: digits-mlp, params: {hidden: 16}}]
data: {name: digits, params: {split: test}}
probes:
  - kind: diagnosis
    name: nap
    params: {delta: 0.95, time_limit: 5, classes: [0, 1, 3], max_local: 2, search_data: false}
    levels: [0, 0.1]
"""


@pytest.fixture(scope="module")
def digits() -> Any:
    return datasets.get("digits")(split="train"), datasets.get("digits")(split="test")


@pytest.fixture(scope="module")
def run(tmp_path_factory: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("nap")
    store = Store(root / "runs.db")
    run_id = run_suite(Suite.from_yaml(SUITE), store, progress=False)
    return {"store": store, "run_id": run_id, "root": root,
            "df": frame(store.records(run_id))}  # fmt: skip


def _float64(clf: TorchClassifier) -> TorchClassifier:
    """The same model evaluated in float64 (an independent re-evaluation of counterexamples)."""
    return TorchClassifier(copy.deepcopy(clf.module).double(), clf.num_classes, clf.domain)


def test_records_equal_the_library(run: dict[str, Any], digits: Any) -> None:
    train, test = digits
    clf = models.create("digits-mlp", {"hidden": 16})
    naps = mine_naps(clf, train.x, train.y, delta=0.95)
    df = run["df"]
    d = df[df["kind"] == "diagnosis"]
    tst = d[(d["x.role"] == "test") & (d["level"] == 0)].sort_values("example_id")
    spec = d[(d["x.role"] == "spec") & (d["level"] == 0)].sort_values("label")
    assert tst["example_id"].tolist() == test.ids.tolist() and len(spec) == 10
    # per example: the matched NAPs are the library's matches(), class by class
    for c, nap in naps.items():
        ref = matches(clf, nap, test.x).numpy()
        got = np.array([c in m for m in tst["x.matched"]])
        np.testing.assert_array_equal(got, ref)
    # coverage per class = nap_recall; sizes and fit recall as mined
    own = tst["x.own"].astype(bool).to_numpy()
    rec = nap_recall(clf, naps, test.x, test.y)
    for c in range(10):
        assert own[test.y.numpy() == c].mean() == pytest.approx(
            rec[c], rel=1e-6
        )  # library: float32 mean
    assert spec["x.size"].astype(int).tolist() == [naps[c].size for c in range(10)]
    fit_rec = nap_recall(clf, naps, train.x, train.y)
    assert spec["x.fit_recall"].tolist() == pytest.approx([fit_rec[c] for c in range(10)])
    with torch.no_grad():
        pred = clf.logits(test.x).argmax(1).numpy()
    assert (tst["pred"].astype(int).to_numpy() == pred).all()
    # agreement: the prediction is a matched NAP's label (null when no NAP matches)
    agree = [None if not m else int(p) in m for m, p in zip(tst["x.matched"], pred, strict=True)]
    assert [None if a is None or a != a else bool(a) for a in tst["x.agree"]] == agree
    # global verdicts: only the requested classes, each the library's verify_nap verdict
    verified = spec[spec["x.status"].notna()]
    assert verified["label"].astype(int).tolist() == [0, 1, 3]
    assert (verified["x.stage"] == "milp").all()
    for _, r in verified.iterrows():
        status, low, _ = verify_nap(clf, naps[int(r["label"])], time_limit=5)
        assert int(r["x.status"]) == status
        if status == COUNTEREXAMPLE:  # a stored counterexample is one, in float64 and float32
            x = torch.tensor(r["x.cex"], dtype=torch.float64).view(1, 1, 8, 8)
            assert bool(matches(clf, naps[int(r["label"])], x)[0])
            assert int(_float64(clf).logits(x).argmax()) == int(r["x.cex_class"]) != r["label"]
            assert r["x.cex_margin"] < 0 and r["x.cex_float32"] in (True, 1)


def test_local_level_records(run: dict[str, Any], digits: Any) -> None:
    _, test = digits
    clf = models.create("digits-mlp", {"hidden": 16})
    d = run["df"]
    loc = d[(d["x.role"] == "test") & (d["level"] == 0.1)].sort_values("example_id")
    checked = loc[loc["x.status"].notna()]
    # up to max_local balls per requested class, around matching, correctly predicted examples
    assert 1 <= len(checked) <= 6 and set(checked["label"].astype(int)) <= {0, 1, 3}
    assert checked["x.own"].astype(bool).all() and (checked["correct"] == 1).all()
    naps = mine_naps(clf, datasets.get("digits")(split="train").x,
                     datasets.get("digits")(split="train").y, 0.95)  # fmt: skip
    pos = {int(i): k for k, i in enumerate(test.ids.tolist())}
    for _, r in checked.iterrows():
        x = test.x[pos[int(r["example_id"])]][None]
        status, _, _ = verify_nap(clf, naps[int(r["label"])], x, 0.1, 5)
        assert int(r["x.status"]) == status
        # the pattern only shrinks the ball: a verified plain ball implies a verified NAP ball
        assert not (r["x.plain_status"] == ROBUST and status != ROBUST)
    spec = d[(d["x.role"] == "spec") & (d["level"] == 0.1)]
    assert int(spec["x.checked"].sum()) == len(checked)
    assert int(spec["x.verified"].sum()) == int((checked["x.status"] == ROBUST).sum())


def test_report_section(run: dict[str, Any], digits: Any) -> None:
    _, test = digits
    rep = build_report(run["store"], run["run_id"])["extensions"]["nap"]["data"]
    (g,) = rep["groups"]
    df = run["df"]
    tst = df[(df["x.role"] == "test") & (df["level"] == 0)]
    for r in g["rows"]:
        sel = tst["label"].astype(int) == r["cls"]
        assert r["coverage"] == pytest.approx(tst.loc[sel, "x.own"].astype(float).mean())
        assert r["n"] == int((test.y == r["cls"]).sum())
        assert (r["status"] is not None) == (r["cls"] in (0, 1, 3))
    assert [x["eps"] for x in g["local"]] == [0.1]
    html = write_report(run["store"], run["run_id"], run["root"])[0].read_text()
    assert "Neural activation pattern specifications" in html
    assert "NAP coverage and purity per class" in html and "verified vs radius" in html


def _toy(w1: list[list[float]], b1: list[float], w2: list[list[float]], b2: list[float]) -> Any:
    net = nn.Sequential(nn.Linear(len(w1[0]), len(w1)), nn.ReLU(), nn.Linear(len(w2[0]), len(w2)))
    with torch.no_grad():
        for lin, w, b in ((net[0], w1, b1), (net[2], w2, b2)):
            lin.weight.copy_(torch.tensor(w))
            lin.bias.copy_(torch.tensor(b))
    return TorchClassifier(net, len(w2), Domain(-1.0, 1.0, (len(w1[0]),)))


def test_counterexample_exactly_on_a_phase_boundary() -> None:
    # NAP_0 fixes z1 = x active and z2 = x inactive: the only matching input is x = 0, where both
    # pre-activations are exactly 0, and there logits (relu(x), 1) give class 1: a counterexample
    # that exists only on the boundary (closed phases). verify and matches must agree on it.
    clf = _toy([[1.0], [1.0]], [0.0, 0.0], [[1.0, 0.0], [0.0, 0.0]], [0.0, 1.0])
    nap = NAP(0, np.array([1, -1], dtype=np.int8), 1.0)
    status, _, xc = verify_nap(clf, nap, time_limit=5)
    assert status == COUNTEREXAMPLE and xc is not None and xc[0] == 0.0
    xt = torch.from_numpy(xc)[None]
    assert bool(matches(clf, nap, xt)[0]) and int(clf.logits(xt.float()).argmax()) == 1
    z = pre_activations(relu_chain(clf), xt)
    assert (z == 0).all()  # exactly on both boundaries
    off = torch.tensor([[1e-12], [-1e-12]], dtype=torch.float64)  # just off it: no pattern holds
    assert not matches(clf, nap, off).any()

    # NAP_0 fixes z1 = x active, the margin z0 - z1 = relu(x) - 0.5 is least at x = 0: the MILP's
    # optimum sits exactly on the phase boundary (pre-activation 0)
    clf = _toy([[1.0]], [0.0], [[1.0], [0.0]], [0.0, 0.5])
    nap = NAP(0, np.array([1], dtype=np.int8), 1.0)
    chain = relu_chain(clf)
    lo, hi = np.array([-1.0]), np.array([1.0])
    prob = milp.Problem.build(chain, lo, hi, nap.phases.astype(np.float64))
    _, best, x0 = prob.minimize(np.array([1.0, -1.0]), 5)
    assert best == pytest.approx(-0.5) and abs(x0[0]) <= 1e-9  # the vertex: z = 0
    # the boundary point itself is in the verified (closed) set for both definitions
    edge = torch.zeros(1, 1, dtype=torch.float64)
    assert bool(matches(clf, nap, edge)[0]) and bool(
        follows_phases(pre_activations(chain, edge), nap.phases)[0]
    )
    status, _, xc = verify_nap(clf, nap, time_limit=5)
    assert status == COUNTEREXAMPLE and xc[0] == pytest.approx(0.25)  # the interior point
    assert bool(matches(clf, nap, torch.from_numpy(xc)[None])[0])


def test_a_solver_point_off_the_boundary_is_never_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    # HiGHS meets constraints up to ~1e-7: a vertex on z = 0 can come back as x = -1e-9, outside
    # the pattern. verify must not return it as it is: it returns the interior point of its linear
    # region, and without that point (disabled here) the class is UNDECIDED, as matches rejects it.
    clf = _toy([[1.0]], [0.0], [[1.0], [0.0]], [0.0, 0.5])
    nap = NAP(0, np.array([1], dtype=np.int8), 1.0)
    outside = np.array([-1e-9])
    assert not bool(matches(clf, nap, torch.from_numpy(outside)[None])[0])
    monkeypatch.setattr(milp.Problem, "minimize",
                        lambda self, spec, tl, cutoff=None: (-np.inf, -0.5, outside.copy()))  # fmt: skip
    status, _, xc = verify_nap(clf, nap, time_limit=5)
    assert status == COUNTEREXAMPLE and bool(matches(clf, nap, torch.from_numpy(xc)[None])[0])
    monkeypatch.setattr(milp, "_interior", lambda *a, **k: None)
    status, _, xc = verify_nap(clf, nap, time_limit=5)
    assert status == UNDECIDED and xc is None


def test_bad_input(tmp_path: Any) -> None:
    store = Store(tmp_path / "runs.db")
    cnn = SUITE.replace("{name: digits-mlp, params: {hidden: 16}}", "{name: digits-cnn}")
    with pytest.raises(CapabilityError, match=r"nap needs .*digits-mlp.*MaxPool2d"):
        run_suite(Suite.from_yaml(cnn), store, progress=False)
    with pytest.raises(ConfigError, match="delta"):
        run_suite(Suite.from_yaml(SUITE.replace("delta: 0.95", "delta: 0.3")), store,
                  progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match=r"classes \[12\]"):
        run_suite(Suite.from_yaml(SUITE.replace("[0, 1, 3]", "[0, 12]")), store, progress=False)
    with pytest.raises(ConfigError, match="eps"):
        run_suite(Suite.from_yaml(SUITE.replace("[0, 0.1]", "[-0.1]")), store, progress=False)
    assert store.runs().empty  # refused before a run was stored


@pytest.mark.slow
def test_full_digits_mlp_run(tmp_path: Any, digits: Any) -> None:
    """The default probe on the 64-64 digits MLP: NAPs (delta 0.99) recall ~94% of the test set,
    and every class's domain specification is refuted by a real digit that matches the NAP and is
    classified otherwise; at eps 0.05 the NAP-restricted balls verify at least as often as the
    plain ones."""
    train, test = digits
    suite = SUITE.replace("{name: digits-mlp, params: {hidden: 16}}", "{name: digits-mlp}")
    suite = suite.replace(
        "{delta: 0.95, time_limit: 5, classes: [0, 1, 3], max_local: 2, search_data: false}",
        "{time_limit: 10, max_local: 1}",
    ).replace("[0, 0.1]", "[0, 0.05]")
    store = Store(tmp_path / "runs.db")
    df = frame(store.records(run_suite(Suite.from_yaml(suite), store, progress=False)))
    clf = models.create("digits-mlp")
    naps = mine_naps(clf, train.x, train.y, delta=0.99)
    rec = nap_recall(clf, naps, test.x, test.y)
    tst = df[(df["x.role"] == "test") & (df["level"] == 0)]
    assert tst["x.own"].astype(float).mean() == pytest.approx(
        sum(rec[c] * int((test.y == c).sum()) for c in rec) / len(test), rel=1e-6
    )
    assert tst["x.own"].astype(float).mean() > 0.9
    spec = df[(df["x.role"] == "spec") & (df["level"] == 0)]
    assert (spec["x.status"] == COUNTEREXAMPLE).all() and (spec["x.stage"] == "data").all()
    pool = torch.cat([train.x, test.x]).double().flatten(1).numpy()
    for _, r in spec.iterrows():
        c, x = int(r["label"]), np.array(r["x.cex"])
        assert (pool == x).all(axis=1).any()  # a real digit
        xt = torch.from_numpy(x).view(1, 1, 8, 8)
        assert bool(matches(clf, naps[c], xt)[0]) and int(clf.logits(xt.float()).argmax()) != c
    loc = df[(df["x.role"] == "spec") & (df["level"] == 0.05)]
    assert int(loc["x.checked"].sum()) == 10
    assert int(loc["x.verified"].sum()) >= int(loc["x.plain_verified"].sum())


def test_no_default_training_split(tmp_path: Any) -> None:
    """Scoring the train split itself without ``fit``: the unit fails with a message naming
    ``fit`` (the default fitting set is only known at run time); the run is stored as failed."""
    store = Store(tmp_path / "runs.db")
    suite = SUITE.replace("{split: test}", "{split: train}").replace("[0, 0.1]", "[0]")
    run_id = run_suite(Suite.from_yaml(suite), store, progress=False)
    info = store.run_info(run_id)
    assert info["status"] == "failed"
    errors = [str(u.get("error")) for u in info["units"] if u.get("status") == "failed"]
    assert len(errors) == 1 and "nap: data 'digits' has no other train split" in errors[0]
    assert "fit:" in errors[0]
