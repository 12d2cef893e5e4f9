"""Representations (issue 19, S20 and S41): CKA/RSA against references, the Robustness Index on a
constructed case with a known answer and on real data, SUFO's probes against scikit-learn, the
sites dataset, and the end-to-end path suite -> store -> report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models
from robustlab.diagnose.features import extract
from robustlab.diagnose.robustness_index import (
    codes,
    knn_indices,
    majority,
    neighbour_counts,
    pca2,
    robustness_index,
)
from robustlab.metrics.representation import (
    _centred_gram,
    cka_matrix,
    hsic,
    linear_cka,
    linear_cka_gram,
    rdm,
    rsa,
    rsa_matrix,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGIT_SITES = {"name": "sites", "params": {"data": {"name": "digits", "params": {"split": "test"}}}}


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]


# CKA and RSA -------------------------------------------------------------------------------------
def test_cka_hand_computable_cases() -> None:
    # one feature each: linear CKA is the squared Pearson correlation
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[1.0], [3.0], [2.0], [5.0]])
    r = np.corrcoef(x.flatten().numpy(), y.flatten().numpy())[0, 1]
    assert linear_cka(x, y) == pytest.approx(r**2, abs=1e-12)
    assert linear_cka_gram(x, y) == pytest.approx(r**2, abs=1e-12)
    # orthogonal feature sets (after centring) have CKA 0: x uses one direction, y the other
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    b = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])
    assert linear_cka(a, b) == pytest.approx(0.0, abs=1e-12)
    # HSIC with the explicit centring matrix: tr(KHLH)/(n-1)^2 by hand for n = 2
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # H = [[.5, -.5], [-.5, .5]]; HKH = H (K = I); tr(H H) = tr(H) = 1; / (n - 1)^2 = 1
    assert hsic(k, k) == pytest.approx(1.0)


def test_cka_invariances_and_forms_agree() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 15, generator=g, dtype=torch.float64)
    w = torch.randn(15, 6, generator=g, dtype=torch.float64)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    q = _orthogonal(15, 1)
    assert linear_cka(x, 3.5 * x @ q) == pytest.approx(1.0, abs=1e-10)  # rotation and scale
    assert linear_cka(x, x + 7.0) == pytest.approx(1.0, abs=1e-12)  # translation (centring)
    aniso = torch.diag(torch.linspace(0.1, 10.0, 15, dtype=torch.float64))
    assert linear_cka(x, x @ aniso) < 0.9  # not invariant to arbitrary linear maps
    # the feature-space form, the Gram form (explicit H), and the batched matrix agree
    feat, gram = linear_cka(x, x @ w), linear_cka_gram(x, x @ w)
    assert feat == pytest.approx(gram, abs=1e-10)
    m = cka_matrix([x, x @ w, x @ q])
    assert float(m[0, 1]) == pytest.approx(feat, abs=1e-10)
    assert torch.allclose(m, m.T) and torch.allclose(m.diagonal(), torch.ones(3, dtype=m.dtype))
    assert float(m[0, 2]) == pytest.approx(1.0, abs=1e-10)
    z = torch.randn(120, 4, generator=g, dtype=torch.float64)
    cross = cka_matrix([x], [x @ w, z])
    assert float(cross[0, 0]) == pytest.approx(feat, abs=1e-10)
    assert float(cross[0, 1]) == pytest.approx(linear_cka(x, z), abs=1e-10)
    assert 0 <= float(cross[0, 1]) < feat
    # a constant representation is similar to nothing
    assert float(cka_matrix([x], [torch.ones(120, 3)])[0, 0]) == 0.0
    with pytest.raises(ConfigError, match="different numbers of examples"):
        linear_cka(x, x[:10])


def test_cka_hsic_and_centred_gram_against_explicit_h() -> None:
    # HSIC by hand for n = 3 (K = L = I): HKH = H, tr(H H) = tr(H) = n - 1 = 2; / (n - 1)^2 = 0.5
    assert hsic(torch.eye(3), torch.eye(3)) == pytest.approx(0.5, abs=1e-15)
    # tr(K H L H) / (n - 1)^2 with H = I - 1 1^T / n written out in numpy
    g = torch.Generator().manual_seed(3)
    n = 5
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    h = np.eye(n) - np.ones((n, n)) / n
    kn, ln = (x @ x.T).numpy(), (y @ y.T).numpy()
    ref = np.trace(kn @ h @ ln @ h) / (n - 1) ** 2
    assert hsic(x @ x.T, y @ y.T) == pytest.approx(ref, rel=1e-12)
    # a non-square matrix is no Gram matrix: refused, not reduced to a number
    with pytest.raises(RuntimeError):
        hsic(torch.ones(2, 3), torch.ones(3, 3))
    # the centred Gram matrix is H X X^T H: in float64 up to p = 4n features ...
    x = torch.randn(n, 4 * n, generator=g, dtype=torch.float64)
    ref = h @ (x @ x.T).numpy() @ h
    assert np.allclose(_centred_gram(x).numpy(), ref, rtol=0, atol=1e-12)
    # ... and for wider layers (p > 4n) from the float32 product of the centred features, within
    # float32 rounding of the same H X X^T H
    x = torch.randn(n, 4 * n + 1, generator=g, dtype=torch.float64)
    ref = h @ (x @ x.T).numpy() @ h
    gram = _centred_gram(x)
    xc = (x - x.mean(0, keepdim=True)).float()
    assert gram.dtype == torch.float64 and torch.equal(gram, (xc @ xc.T).double())
    assert np.allclose(gram.numpy(), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    assert not np.allclose(gram.numpy(), ref, rtol=0, atol=1e-12)  # float32 rounding shows


def test_cka_constant_sides_and_bounds() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    const = torch.full((7, 2), 2.5)
    # a constant side has CKA 0 in every form, itself included
    assert linear_cka(x, const) == 0.0 and linear_cka(const, x) == 0.0
    assert linear_cka_gram(x, const) == 0.0 and linear_cka_gram(const, x) == 0.0
    m = cka_matrix([x, const])
    assert torch.equal(m, torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=m.dtype))
    # CKA lies in [0, 1] after rounding too, and a representation against itself is exactly 1 on
    # the diagonal (20 small random ones: the normalised rows' self products land 1 ulp either
    # side of 1 for some of them)
    xs = [torch.randn(6, 3, generator=g, dtype=torch.float64) for _ in range(20)]
    m = cka_matrix(xs)
    assert torch.equal(m.diagonal(), torch.ones(20, dtype=m.dtype))
    cross = cka_matrix(xs, xs)  # the general path: no diagonal fix-up
    assert float(cross.max()) <= 1.0
    assert torch.allclose(cross.diagonal(), torch.ones(20, dtype=m.dtype), rtol=0, atol=1e-15)
    assert torch.allclose(cross, m, rtol=0, atol=1e-15)


def test_rsa_against_scipy() -> None:
    from scipy.spatial.distance import pdist, squareform
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(3)
    x = torch.randn(60, 8, generator=g, dtype=torch.float64)
    y = x**3 + 0.5 * torch.randn(60, 8, generator=g, dtype=torch.float64)
    ref_x, ref_y = pdist(x.numpy(), "correlation"), pdist(y.numpy(), "correlation")
    assert np.allclose(rdm(x).numpy(), squareform(ref_x), atol=1e-12)
    assert rsa(x, y) == pytest.approx(spearmanr(ref_x, ref_y)[0], abs=1e-12)
    # ties (a discrete representation) get average ranks, as scipy
    yd = torch.round(y)
    ref_d = np.round(pdist(yd.numpy(), "correlation"), 12)  # ties up to float rounding
    assert rsa(x, yd) == pytest.approx(spearmanr(np.round(ref_x, 12), ref_d)[0], abs=1e-12)
    m = rsa_matrix([x, y, 2 * x + 1])
    assert torch.allclose(m, m.T) and float(m[0, 2]) == pytest.approx(1.0)


# Robustness Index ------------------------------------------------------------------------------
def _cells(class_scale: float, site_scale: float, m: int = 5) -> tuple[torch.Tensor, ...]:
    """2 classes x 2 sites, m points per cell at (class_scale * class, site_scale * site) with a
    tiny jitter: every neighbour order between cells is known."""
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 0, 1, 1]).repeat_interleave(m)
    c = torch.tensor([0, 1, 0, 1]).repeat_interleave(m)
    z = torch.stack([class_scale * y, site_scale * c], 1).double()
    return z + 1e-3 * torch.randn(z.shape, generator=g, dtype=torch.float64), y, c


def test_robustness_index_known_answer() -> None:
    # k = 12 of 19 others: the 4 cell-mates, then the whole nearer cell (5), then 3 of the next
    z, y, c = _cells(class_scale=10.0, site_scale=1.0)  # class dominates: nearer cell = SO
    cnt = neighbour_counts(knn_indices(z, 12, "euclidean"), y, c)
    assert cnt["ss"].tolist() == [4] * 20 and cnt["so"].tolist() == [5] * 20
    assert cnt["os"].tolist() == [3] * 20 and cnt["oo"].tolist() == [0] * 20
    ri = robustness_index(cnt["so"], cnt["os"])
    assert ri["index"] == pytest.approx(5 / 3) and ri["normalized"] == pytest.approx(5 / 8)
    z, y, c = _cells(class_scale=1.0, site_scale=10.0)  # site dominates: nearer cell = OS
    cnt = neighbour_counts(knn_indices(z, 12, "euclidean"), y, c)
    assert robustness_index(cnt["so"], cnt["os"])["index"] == pytest.approx(3 / 5)
    # the k-NN vote recovers the dominant factor; PCA's first axis is the site axis here
    nb = knn_indices(z, 4, "euclidean")
    assert torch.equal(majority(nb, c, 2), c)
    pc = pca2(z)
    assert abs(float(torch.corrcoef(torch.stack([pc[:, 0], c.double()]))[0, 1])) > 0.99
    assert math.isinf(robustness_index([3], [0])["index"])


def test_knn_matches_sklearn() -> None:
    from sklearn.neighbors import NearestNeighbors

    g = torch.Generator().manual_seed(1)
    z = torch.randn(300, 12, generator=g)
    for metric in ("euclidean", "cosine"):
        ours = knn_indices(z, 7, metric, chunk=64)  # chunks must not change the answer
        ref = NearestNeighbors(n_neighbors=8, metric=metric, algorithm="brute").fit(z.numpy())
        idx = ref.kneighbors(z.numpy(), return_distance=False)[:, 1:]  # drop the query itself
        assert (ours.numpy() == idx).mean() > 0.999
    with pytest.raises(ConfigError, match="k must lie in 1..299"):
        knn_indices(z, 300)


def test_sites_dataset() -> None:
    d = datasets.create("sites", DIGIT_SITES["params"])
    base = datasets.create("digits", {"split": "test"})
    sites = d.meta["site"]
    assert set(sites) == {"none", "contrast@2", "brightness@2", "gaussian_blur@1"}
    assert torch.equal(d.y, base.y) and torch.equal(d.ids, base.ids)
    # each site's images are that perturbation of the original; 'none' is untouched
    from robustlab.core.registry import perturbations
    from robustlab.core.rng import ExampleRNG

    idx = [i for i, s in enumerate(sites) if s == "contrast@2"]
    ref = perturbations.create("contrast")(base.x[idx], 2.0, ExampleRNG.from_seed(0, base.ids[idx]))
    assert torch.allclose(d.x[idx], ref)
    none = [i for i, s in enumerate(sites) if s == "none"]
    assert torch.equal(d.x[none], base.x[none])
    # correlation 1: site = class mod 4; target site: labels are sites
    tied = datasets.create("sites", {**DIGIT_SITES["params"], "correlation": 1.0, "target": "site"})
    c, names = codes(tied.meta["site"])
    assert torch.equal(tied.y, base.y % 4)
    assert tied.classes == ["none", "contrast@2", "brightness@2", "gaussian_blur@1"]
    with pytest.raises(ConfigError, match="at least 2 site"):
        datasets.create("sites", {**DIGIT_SITES["params"], "sites": [{"name": "none"}]})
    with pytest.raises(ConfigError, match="Did you mean|unknown"):
        datasets.create(
            "sites", {**DIGIT_SITES["params"], "sites": [{"name": "none"}, {"name": "contrst"}]}
        )


def _index(model: Any, d: Any, k: int = 10) -> float:
    z = extract(model, d.x, ("penultimate",))["penultimate"]
    c, _ = codes(d.meta["site"])
    cnt = neighbour_counts(knn_indices(z, k), d.y, c)
    return robustness_index(cnt["so"], cnt["os"])["index"]


def test_robustness_index_real_digits_trained_vs_untrained() -> None:
    """digits-cnn (trained on clean digits) organises the site-signed test digits by class; the
    same architecture untrained organises them by site signature."""
    d = datasets.create("sites", DIGIT_SITES["params"])
    trained = _index(models.create("digits-cnn", {"seed": 0}), d)
    untrained = _index(models.create("small-cnn", {"side": 8}), d)
    assert trained > 5.0 and untrained < 1.0, (trained, untrained)


@pytest.mark.slow
def test_robustness_index_real_fashion_site_shortcut() -> None:
    """Fashion-MNIST with 4 site signatures: a CNN trained on classes has index > 1, an
    untrained one < 1, and one trained to predict the site ~0 (measured 2.60 / 0.80 / 0.0006)."""
    d = datasets.create("sites", {"data": {"name": "fashion-mnist", "params": {"limit": 1000}}})
    train = {"data": {"name": "fashion-mnist", "params": {"split": "train", "limit": 3000}}}
    base = {"name": "small-cnn", "params": {"side": 28}}

    def trained(target: str) -> Any:
        data = {"name": "sites", "params": {**train, "target": target}}
        return models.create("trained", {"base": base, "data": data, "epochs": 2, "holdout": 0})

    by_class = _index(trained("class"), d)
    by_site = _index(trained("site"), d)
    untrained = _index(models.create("small-cnn", {"side": 28}), d)
    assert by_class > 1.5 and untrained < 1.0 and by_site < 0.05, (by_class, untrained, by_site)


# SUFO --------------------------------------------------------------------------------------------
def test_probe_matches_sklearn_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    from robustlab.diagnose.sufo import fit_probe, probe_predict

    tr, te = (
        datasets.create("digits", {"split": "train"}),
        datasets.create("digits", {"split": "test"}),
    )
    mlp = models.create("digits-mlp", {"seed": 0})
    ftr = extract(mlp, tr.x, ("net.2",))["net.2"]
    fte = extract(mlp, te.x, ("net.2",))["net.2"]
    probe = fit_probe(ftr, tr.y, 10, c=0.5, steps=200)
    ours = probe_predict(probe, fte).numpy()
    mean, std = probe[0].numpy(), probe[1].numpy()
    ref = LogisticRegression(C=0.5, max_iter=5000, tol=1e-8).fit(
        (ftr.double().numpy() - mean) / std, tr.y.numpy()
    )
    theirs = ref.predict((fte.double().numpy() - mean) / std)
    assert (ours == theirs).mean() >= 0.99
    # same minimiser: the weights agree (sklearn's objective is ours times n)
    assert np.allclose(probe[2].numpy(), ref.coef_.T, atol=5e-3 * np.abs(ref.coef_).max())


def test_unknown_probe_layer_lists_layers() -> None:
    from robustlab.core.registry import diagnoses

    cnn = models.create("digits-cnn", {"seed": 0})
    sufo = diagnoses.create("sufo", {"layers": ["features.0", "head.9"]})
    with pytest.raises(
        ConfigError, match=r"no layer 'head\.9'; its layers: logits, penultimate, input, features"
    ):
        sufo.check_model(cnn)
    ri = diagnoses.create("robustness-index", {"layer": "nope"})
    with pytest.raises(ConfigError, match="no layer 'nope'"):
        ri.check_model(cnn)
    with pytest.raises(ConfigError, match="no metadata column 'center'.*site"):
        diagnoses.create("robustness-index", {"confounder": "center"}).check_data(
            datasets.create("sites", DIGIT_SITES["params"]), {}
        )
    one_site = datasets.create("sites", DIGIT_SITES["params"])
    one_site.meta["site"] = ["none"] * len(one_site)
    with pytest.raises(ConfigError, match="at least 2 classes and 2 values of 'site'"):
        ri.check_data(one_site, {})


# end to end ------------------------------------------------------------------------------------
SUITE = """
name: representations
models:
  - {name: digits-cnn}
  - {name: small-cnn, label: untrained, params: {side: 8}}
data: {name: sites, params: {data: {name: digits, params: {split: test}}}}
probes:
  - {kind: diagnosis, name: robustness-index, params: {k: 10}}
  - kind: diagnosis
    name: sufo
    params:
      compare: {name: digits-mlp}
      max_examples: 300
      probe_steps: 30
"""


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from robustlab.report.build import build_report, write_report
    from robustlab.runner import Suite
    from robustlab.runner.runner import run_suite
    from robustlab.store import Store

    root: Path = tmp_path_factory.mktemp("repr")
    store = Store(root / "runs.db")
    run_id = run_suite(Suite.from_yaml(SUITE), store, progress=False)
    html, _ = write_report(store, run_id, root / "out")
    return {
        "df": store.records(run_id),
        "report": build_report(store, run_id),
        "html": html.read_text(),
    }


def test_e2e_robustness_index_records_and_report(e2e: dict[str, Any]) -> None:
    df = e2e["df"]
    d = datasets.create("sites", DIGIT_SITES["params"])
    ri = df[df["probe"] == "robustness-index"]
    rows = {r["model"]: r for r in e2e["report"]["extensions"]["robustness-index"]["data"]["rows"]}
    for label, name, params in (
        ("digits-cnn", "digits-cnn", {"seed": 0}),
        ("untrained", "small-cnn", {"side": 8}),
    ):
        g = ri[ri["model"] == label].sort_values("example_id")
        assert g["example_id"].tolist() == sorted(d.ids.tolist())
        # independent recomputation: sklearn's exact neighbours on the model's features
        from sklearn.neighbors import NearestNeighbors

        z = extract(models.create(name, params), d.x, ("penultimate",))["penultimate"].numpy()
        nb = NearestNeighbors(n_neighbors=11, metric="cosine", algorithm="brute").fit(z)
        idx = nb.kneighbors(z, return_distance=False)[:, 1:]
        y, c = d.y.numpy(), np.array(d.meta["site"])
        so = ((y[idx] == y[:, None]) & (c[idx] != c[:, None])).sum()
        os_ = ((y[idx] != y[:, None]) & (c[idx] == c[:, None])).sum()
        assert abs(int(g["x.so"].sum()) - so) <= 3 and abs(int(g["x.os"].sum()) - os_) <= 3
        assert rows[label]["index"] == pytest.approx(g["x.so"].sum() / g["x.os"].sum())
        assert rows[label]["lo"] <= rows[label]["index"] <= rows[label]["hi"]
    assert rows["digits-cnn"]["index"] > 5 > 1 > rows["untrained"]["index"]
    assert "Robustness Index" in e2e["html"] and "PC 1" in e2e["html"]


def test_e2e_sufo_records_and_report(e2e: dict[str, Any]) -> None:
    from robustlab.diagnose.sufo import default_layers

    df = e2e["df"]
    s = df[(df["probe"] == "sufo") & (df["model"] == "digits-cnn")]
    cnn = models.create("digits-cnn", {"seed": 0})
    layers = default_layers(cnn)
    lay = s[s["x.role"] == "layer"].sort_values("example_id")
    assert lay["x.layer"].tolist() == layers
    test = s[s["x.role"] == "test"]
    assert len(test) == 360 and all(f"x.probe:{name}" in test for name in layers)
    pairs = s[s["x.role"] == "pair"]
    own = pairs[pairs["x.group"] == "layers"]
    assert len(own) == len(layers) * (len(layers) - 1) // 2
    assert len(pairs[pairs["x.group"] == "compare"]) == len(layers) * len(
        default_layers(models.create("digits-mlp", {}))
    )
    # a stored CKA against the feature-space formula on the same 300 examples
    d = datasets.create("sites", DIGIT_SITES["params"])
    f = extract(cnn, d.x, ("features.0", "head.2"))
    row = own[(own["x.layer_a"] == "features.0") & (own["x.layer_b"] == "head.2")].iloc[0]
    assert row["x.cka"] == pytest.approx(
        linear_cka(f["features.0"][:300], f["head.2"][:300]), abs=1e-5
    )
    assert row["x.rsa"] == pytest.approx(rsa(f["features.0"][:300], f["head.2"][:300]), abs=1e-6)
    sec = e2e["report"]["extensions"]["sufo"]["data"]
    acc = {p["model"]: p for p in sec["probes"]}["digits-cnn"]
    labels = test["label"].astype(int).to_numpy()
    assert acc["accuracy"][-1] == pytest.approx(
        (test["x.probe:head.3"].to_numpy() == labels).mean()
    )
    assert acc["accuracy"][-2] > 0.9  # the trained CNN's last hidden layer is linearly separable
    untrained = {p["model"]: p for p in sec["probes"]}["untrained"]
    assert untrained["accuracy"][-2] < acc["accuracy"][-2]
    assert "Linear CKA" in e2e["html"] and "Probe accuracy per layer" in e2e["html"]


@pytest.mark.slow
def test_sufo_dynamics_over_epochs(tmp_path: Path) -> None:
    """checkpoints: the trained spec for fewer epochs; CKA to the final model rises to 1."""
    from robustlab.runner import Suite
    from robustlab.runner.runner import run_suite
    from robustlab.store import Store

    suite = """
name: dynamics
models:
  - name: trained
    params: {base: {name: small-cnn, params: {side: 8}}, data: {name: digits, params: {split: train}},
             epochs: 3, holdout: 0}
data: {name: digits, params: {split: test}}
probes:
  - kind: diagnosis
    name: sufo
    params: {layers: [features.2, head.2], checkpoints: [0, 1, 3],
             fit: {name: digits, params: {split: train}}}
"""
    store = Store(tmp_path / "runs.db")
    run_id = run_suite(Suite.from_yaml(suite), store, progress=False)
    df = store.records(run_id)
    dyn = df[df["x.group"] == "epoch"].sort_values(["x.layer_a", "x.epoch"])
    head = dyn[dyn["x.layer_a"] == "head.2"]
    assert head["x.epoch"].tolist() == [0, 1, 3]
    cka = head["x.cka"].tolist()
    assert cka[-1] == pytest.approx(1.0) and cka[0] < cka[1] < 1.0
    # probes fit on the train split score the test split: the trained CNN's head separates
    test = df[df["x.role"] == "test"]
    assert (test["x.probe:head.2"] == test["label"].astype(int)).mean() > 0.85


@pytest.mark.slow
def test_fewer_epochs_equal_the_longer_runs_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SUFO's checkpoints are the spec trained for fewer epochs: with the constant schedule these
    are the weights the longer run had after that epoch (read from its per-epoch checkpoint)."""
    from robustlab.training.api import train

    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path))
    spec = {"base": {"name": "small-cnn", "params": {"side": 8}},
            "data": {"name": "digits", "params": {"split": "train"}}, "epochs": 3, "holdout": 0}  # fmt: skip
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def grab(row: dict[str, Any]) -> None:
        (ckpt,) = (tmp_path / "models").glob("trained-*/checkpoint.pt")
        seen[row["epoch"]] = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]

    train(spec, progress=False, on_epoch=grab)
    for epoch in (1, 2):
        short = train({**spec, "epochs": epoch}, progress=False).module.state_dict()
        for name, t in short.items():
            assert torch.equal(t, seen[epoch][name]), (epoch, name)


def test_bad_probe_layer_stops_the_run_before_anything_is_stored(tmp_path: Path) -> None:
    from robustlab.runner import Suite
    from robustlab.runner.runner import run_suite
    from robustlab.store import Store

    bad = SUITE.replace(
        "max_examples: 300", "max_examples: 300\n      layers: [features.0, head.7]"
    )
    store = Store(tmp_path / "runs.db")
    with pytest.raises(
        ConfigError, match=r"sufo: model has no layer 'head\.7'; its layers: .*head\.3"
    ):
        run_suite(Suite.from_yaml(bad), store, progress=False)
    assert store.runs().empty
    for params, msg in (
        ("{checkpoints: [1]}", "need a 'trained' model"),
        ("{compare: {name: digits-cnnn}}", "digits-cnn"),
    ):
        suite = (
            SUITE.split("probes:")[0]
            + f"probes:\n  - {{kind: diagnosis, name: sufo, params: {params}}}\n"
        )
        with pytest.raises(ConfigError, match=msg):
            run_suite(Suite.from_yaml(suite), store, progress=False)
    assert store.runs().empty
