"""S28 (memorization: Fourier IPR, pruning) and S45 (capability-probe: probing, pruning, revival)
on modular arithmetic: formulas on hand-computable cases and against numpy / scikit-learn /
autograd references, exact dataset corruption, pruning, suite -> store -> report."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.records import frame
from robustlab.core.registry import datasets, models
from robustlab.diagnose.capability_probe import ridge_probe, taylor_importance
from robustlab.diagnose.memorization import fourier_power, ipr, neuron_ipr, pruning_order
from robustlab.models.modular import prune
from robustlab.report import build_report, write_report
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(p: int = 23, frac: float = 0.8, **kw: Any) -> dict[str, Any]:
    return {"name": "modular-arithmetic", "params": {"p": p, "train_fraction": frac, **kw}}


# --- IPR ------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [23, 24])
def test_ipr_single_mode_is_one_and_flat_power_is_one_over_f(p: int) -> None:
    j = torch.arange(p, dtype=torch.float64)
    for k in range(p // 2 + 1):
        for phase in (0.0, 0.7, 2.0):
            u = 3.0 * torch.cos(2 * math.pi * k * j / p + phase)
            if k == 0 or 2 * k == p:
                u = torch.cos(2 * math.pi * k * j / p) * 3.0  # real modes: no free phase
            assert float(ipr(u)) == pytest.approx(1.0, abs=1e-9)
    f = p // 2 + 1
    # equal folded power in every frequency: P_0 = |sum u|^2, P_k = p^2/2 * c_k^2 for a cosine
    # of amplitude c_k (0 < k < p/2), P_{p/2} = p^2 * c^2 for even p
    u = torch.full((p,), 1.0 / math.sqrt(1.0), dtype=torch.float64)  # P_0 = p^2
    for k in range(1, (p + 1) // 2):
        u = u + math.sqrt(2.0) * torch.cos(2 * math.pi * k * j / p + 0.3 * k)
    if p % 2 == 0:
        u = u + torch.cos(math.pi * j)
    power = fourier_power(u)
    assert torch.allclose(power, torch.full_like(power, p**2), rtol=1e-9)
    assert float(ipr(u)) == pytest.approx(1.0 / f, rel=1e-6)
    assert float(ipr(torch.zeros(p))) == 0.0


def test_fourier_power_and_ipr_match_numpy_rfft() -> None:
    rng = np.random.default_rng(0)
    for p in (23, 24):
        u = rng.normal(size=(5, p))
        spec = np.abs(np.fft.rfft(u, axis=1)) ** 2  # one-sided: k = 0..floor(p/2)
        ref = spec.copy()
        ref[:, 1 : (p + 1) // 2] *= 2  # conjugate frequencies of a real signal
        ours = fourier_power(torch.from_numpy(u)).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-10)
        nu = ref / ref.sum(1, keepdims=True)
        np.testing.assert_allclose(ipr(torch.from_numpy(u)).numpy(), (nu**2).sum(1), rtol=1e-6)
        # (||A||_4 / ||A||_2)^4 with A = sqrt(P): the paper's IPR_r at r = 2
        a = np.sqrt(ref)
        np.testing.assert_allclose(
            (nu**2).sum(1), (np.linalg.norm(a, 4, 1) / np.linalg.norm(a, 2, 1)) ** 4
        )


def test_neuron_ipr_is_mean_of_halves_and_pruning_order() -> None:
    p = 23
    j = torch.arange(p, dtype=torch.float64)
    periodic = torch.cat([torch.cos(2 * math.pi * 3 * j / p), torch.sin(2 * math.pi * 3 * j / p)])
    delta = torch.zeros(2 * p, dtype=torch.float64)
    delta[4], delta[p + 7] = 1.0, 1.0
    w = torch.stack([periodic, delta]).float()
    s = neuron_ipr(w, p)
    assert float(s[0]) == pytest.approx(1.0, abs=1e-6)
    # a delta has |û_k| = 1 for every k: folded power 1, 2, ..., 2 -> (1 + 4m) / (1 + 2m)^2
    m = (p - 1) // 2
    assert float(s[1]) == pytest.approx((1 + 4 * m) / (1 + 2 * m) ** 2, rel=1e-6)
    assert pruning_order(s, "low-ipr", 0).tolist() == [1, 0]
    assert pruning_order(s, "high-ipr", 0).tolist() == [0, 1]
    assert sorted(pruning_order(torch.rand(9), "random", 3).tolist()) == list(range(9))
    with pytest.raises(ConfigError, match="not \\[hidden, 2\\*23\\]"):
        neuron_ipr(torch.zeros(4, 40), p)


# --- dataset --------------------------------------------------------------------------------


def test_dataset_corruption_is_exact_and_test_is_clean() -> None:
    p, frac, noise = 29, 0.6, 0.15
    tr = datasets.create("modular-arithmetic", _data(p, frac, noise=noise, split="train")["params"])
    te = datasets.create("modular-arithmetic", _data(p, frac, noise=noise, split="test")["params"])
    n_train = math.floor(frac * p * p + 0.5)
    assert len(tr) == n_train and len(te) == p * p - n_train
    assert set(tr.ids.tolist()).isdisjoint(te.ids.tolist())
    assert sorted(tr.ids.tolist() + te.ids.tolist()) == list(range(p * p))
    a, b = torch.tensor(tr.meta["a"]), torch.tensor(tr.meta["b"])
    assert torch.equal(tr.fields["clean_y"], (a + b) % p)
    assert torch.equal(tr.ids, a * p + b)
    x_ref = torch.cat([F.one_hot(a, p), F.one_hot(b, p)], 1).float()
    assert torch.equal(tr.x, x_ref)
    corrupted = torch.tensor(tr.meta["corrupted"])
    assert int(corrupted.sum()) == math.floor(noise * n_train + 0.5)  # exactly round(noise * n)
    assert torch.equal(corrupted, tr.y != tr.fields["clean_y"])  # every corrupted label is wrong
    assert not any(te.meta["corrupted"]) and torch.equal(te.y, te.fields["clean_y"])
    sub = datasets.create("modular-arithmetic", {"p": 7, "op": "sub", "shift": 2, "split": "all"})
    aa, bb = torch.tensor(sub.meta["a"]), torch.tensor(sub.meta["b"])
    assert torch.equal(sub.y, (aa - bb + 2) % 7) and len(sub) == 49
    with pytest.raises(ConfigError, match="p must be at least 3"):
        datasets.create("modular-arithmetic", {"p": 2})


# --- models and pruning ---------------------------------------------------------------------

TINY = {"data": _data(split="train", noise=0.1), "hidden": 32, "steps": 200, "weight_decay": 0.5}


@pytest.fixture(scope="module")
def tiny() -> Any:
    return models.create("modular-mlp", TINY)


def test_pruning_zeroes_the_chosen_neurons(tiny: Any) -> None:
    before = tiny.module.net.inp.weight.detach().clone()
    idx = torch.tensor([0, 5, 17])
    pr = prune(tiny, idx)
    assert torch.equal(tiny.module.net.inp.weight, before)  # the original is untouched
    assert (pr.module.net.inp.weight[idx] == 0).all() and (
        pr.module.net.out.weight[:, idx] == 0
    ).all()
    x = datasets.create("modular-arithmetic", {"p": 23, "split": "all"}).x
    h = pr.module.net.act1(pr.module.net.inp(x))
    assert (h[:, idx] == 0).all() and (h[:, [1, 2, 3]] != 0).any()
    # the pruned output equals the readout of the kept neurons of the original
    keep = torch.ones(32, dtype=torch.bool)
    keep[idx] = False
    h0 = tiny.module.net.act1(tiny.module.net.inp(x))
    ref = h0[:, keep] @ tiny.module.net.out.weight[:, keep].T
    assert torch.allclose(pr.logits(x), ref, atol=1e-5)
    with pytest.raises(ConfigError, match="not a hidden layer"):
        prune(tiny, idx, "net.out")


def test_ridge_probe_equals_sklearn_ridge_classifier() -> None:
    from sklearn.linear_model import RidgeClassifier

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=g)
    y = (x[:, :3].argmax(1) + (x[:, 5] > 1).long()) % 4
    xt = torch.randn(100, 12, generator=g)
    for alpha in (0.1, 3.0):
        ref = RidgeClassifier(alpha=alpha).fit(x.numpy(), y.numpy()).predict(xt.numpy())
        assert ridge_probe(x, y, xt, 4, alpha).tolist() == ref.tolist()


def test_taylor_importance_matches_the_closed_form(tiny: Any) -> None:
    d = datasets.create("modular-arithmetic", {"p": 23, "split": "test", "train_fraction": 0.8})
    imp = taylor_importance(tiny, "net.act1", d.x, d.y)
    with torch.no_grad():  # dL/dh = (softmax - onehot) W / N for a linear readout W
        h = tiny.module.net.act1(tiny.module.net.inp(d.x))
        grad = (
            F.softmax(h @ tiny.module.net.out.weight.T, 1) - F.one_hot(d.y, 23)
        ) @ tiny.module.net.out.weight
        ref = (h * grad / len(d)).sum(0).abs()
    assert torch.allclose(imp, ref, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in tiny.module.parameters())


# --- end to end -----------------------------------------------------------------------------

S28 = """
name: memorization-test
models:
  - {name: modular-mlp, label: wd-0.1, params: {data: %(train)s, hidden: 32, steps: 200, weight_decay: 0.1}}
  - {name: modular-mlp, label: wd-0.5, params: {data: %(train)s, hidden: 32, steps: 200, weight_decay: 0.5}}
data: %(test)s
probes:
  - {kind: diagnosis, name: memorization, params: {train: %(train)s}, levels: [0, 0.25, 0.5]}
  - {kind: diagnosis, name: memorization, label: random-prune, params: {train: %(train)s, order: random}, levels: [0.25]}
"""
S45 = """
name: capability-test
models:
  - {name: modular-mlp, label: pretrained, params: %(pre)s}
  - {name: modular-mlp, label: finetuned, params: {data: %(new)s, init: {name: modular-mlp, params: %(pre)s}, steps: 100, lr: 0.001, weight_decay: 0}}
data: %(test)s
probes:
  - {kind: diagnosis, name: capability-probe, params: {fit: %(fit)s, new: %(new)s, prune: 0.1, revive_steps: [5]}}
"""


def _yaml(d: Any) -> str:
    import json

    return json.dumps(d)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("memo")
    store = Store(root / "runs.db")
    train, test = _data(split="train", noise=0.1), _data(split="test")
    s28 = S28 % {"train": _yaml(train), "test": _yaml(test)}
    pre = {"data": _data(split="train"), "depth": 2, "activation": "relu", "hidden": 48,
           "steps": 300, "weight_decay": 1.0}  # fmt: skip
    s45 = S45 % {"pre": _yaml(pre), "new": _yaml(_data(split="train", shift=5)),
                 "fit": _yaml(_data(split="train")), "test": _yaml(test)}  # fmt: skip
    r28 = run_suite(Suite.from_yaml(s28), store, progress=False)
    r45 = run_suite(Suite.from_yaml(s45), store, progress=False)
    return {"store": store, "root": root, "r28": r28, "r45": r45, "pre": pre,
            "df28": frame(store.records(r28)), "df45": frame(store.records(r45))}  # fmt: skip


def test_memorization_records_equal_a_direct_recomputation(runs: dict[str, Any]) -> None:
    df = runs["df28"]
    tr = datasets.create("modular-arithmetic", _data(split="train", noise=0.1)["params"])
    te = datasets.create("modular-arithmetic", _data(split="test")["params"])
    for wd in (0.1, 0.5):
        m = models.create("modular-mlp", {**TINY, "weight_decay": wd})
        s = neuron_ipr(m.module.net.inp.weight, 23)
        for level in (0.0, 0.25, 0.5):
            k = round(level * 32)
            pm = prune(m, torch.argsort(s, stable=True)[:k]) if k else m
            g = df[
                (df["model"] == f"wd-{wd}")
                & (df["probe"] == "memorization")
                & (df["level"] == level)
            ]
            for role, d in (("train", tr), ("test", te)):
                r = g[g["x.role"] == role].sort_values("example_id")
                with torch.no_grad():
                    after, before = pm.logits(d.x).argmax(1), m.logits(d.x).argmax(1)
                assert len(r) == len(d)
                assert r["pred"].astype(int).tolist() == after.tolist()
                assert r["correct"].astype(bool).tolist() == (after == d.y).tolist()
                assert r["x.correct_before"].astype(bool).tolist() == (before == d.y).tolist()
                assert (
                    r["x.true_correct"].astype(bool).tolist()
                    == (after == d.fields["clean_y"]).tolist()
                )
                assert set(r["x.pruned"]) == {k}
            assert r["x.ipr_mean"].iloc[0] == pytest.approx(float(s.mean()), rel=1e-6)
    train_rows = df[df["x.role"] == "train"]
    assert int(train_rows["m.corrupted"].astype(bool).sum()) == 2 * 4 * math.floor(0.1 * 423 + 0.5)


def test_memorization_report_section(runs: dict[str, Any]) -> None:
    rep = build_report(runs["store"], runs["r28"])["extensions"]["memorization"]["data"]
    df = runs["df28"]
    for r in rep["rows"]:
        g = df[
            (df["model"] == r["model"]) & (df["probe"] == r["probe"]) & (df["level"] == r["level"])
        ]
        tr = g[g["x.role"] == "train"]
        corr = tr["m.corrupted"].astype(bool)
        assert r["corrupted_fit"] == pytest.approx(tr["correct"][corr].mean())
        assert r["clean"] == pytest.approx(tr["correct"][~corr].mean())
        assert r["test"] == pytest.approx(g[g["x.role"] == "test"]["correct"].mean())
        assert r["weight_decay"] == float(r["model"].removeprefix("wd-"))
    html = write_report(runs["store"], runs["r28"], runs["root"] / "rep28")[0].read_text()
    assert "Memorisation: IPR pruning" in html and "Effect of weight decay" in html
    assert "<svg" in html


def test_capability_probe_records_and_report(runs: dict[str, Any]) -> None:
    from robustlab.diagnose.features import extract

    df = runs["df45"]
    df = df[df["kind"] == "diagnosis"]
    assert set(df["x.role"]) == {"model", "pruned", "revive-5", "scratch-5"}
    pre = models.create("modular-mlp", runs["pre"])
    fit = datasets.create("modular-arithmetic", _data(split="train")["params"])
    te = datasets.create("modular-arithmetic", _data(split="test")["params"])
    f_fit, f = (
        extract(pre, fit.x, ["net.act1", "net.act2"]),
        extract(pre, te.x, ["net.act1", "net.act2"]),
    )
    g = df[(df["model"] == "pretrained") & (df["x.role"] == "model")].sort_values("example_id")
    assert g["pred"].astype(int).tolist() == f["logits"].argmax(1).tolist()
    for layer in ("net.act1", "net.act2"):
        ref = ridge_probe(f_fit[layer], fit.y, f[layer], 23)
        assert g[f"x.probe_{layer}"].astype(int).tolist() == ref.tolist()
    rep = build_report(runs["store"], runs["r45"])["extensions"]["capability-probe"]["data"]
    assert rep["layers"] == ["net.act1", "net.act2"]
    for r in rep["rows"]:
        s = df[(df["model"] == r["model"]) & (df["x.role"] == r["stage"])]
        assert r["output"] == pytest.approx(s["correct"].mean())
        assert r["probes"]["net.act2"] == pytest.approx(
            s["x.probe_net.act2_correct"].astype(float).mean()
        )
    html = write_report(runs["store"], runs["r45"], runs["root"] / "rep45")[0].read_text()
    assert "capability removed or wrapped" in html


def test_bad_input(tmp_path: Any) -> None:
    store = Store(tmp_path / "runs.db")
    bad_model = """
name: bad
models: [{name: digits-mlp, params: {hidden: 16}}]
data: {name: digits, params: {split: test}}
probes: [{kind: diagnosis, name: memorization}]
"""
    with pytest.raises(CapabilityError, match="needs a modular-mlp"):
        run_suite(Suite.from_yaml(bad_model), store, progress=False)
    bad_level = S28 % {
        "train": _yaml(_data(split="train", noise=0.1)),
        "test": _yaml(_data(split="test")),
    }
    with pytest.raises(ConfigError, match="fraction of neurons pruned"):
        run_suite(
            Suite.from_yaml(bad_level.replace("[0, 0.25, 0.5]", "[0, 1.5]")), store, progress=False
        )
    with pytest.raises(ConfigError, match="revive_steps"):
        from robustlab.core.registry import diagnoses

        diagnoses.create("capability-probe", {"fit": _data(), "revive_steps": [0]}).datasets()


# --- the memorise + generalise regime (slow: ~10 s of training, cached afterwards) -----------


@pytest.mark.slow
def test_memorise_and_generalise_then_pruning_low_ipr_forgets_the_corrupted_labels() -> None:
    data = _data(31, 0.8, noise=0.1, split="train")
    m = models.create("modular-mlp", {"data": data, "weight_decay": 3.0, "steps": 3000})
    tr = datasets.create("modular-arithmetic", data["params"])
    te = datasets.create("modular-arithmetic", _data(31, 0.8, split="test")["params"])
    corr = torch.tensor(tr.meta["corrupted"])
    with torch.no_grad():
        a, b = m.logits(tr.x).argmax(1), m.logits(te.x).argmax(1)
    assert (a == tr.y).all()  # every corrupted label memorised ...
    assert float((b == te.y).float().mean()) > 0.75  # ... while generalising
    s = neuron_ipr(m.module.net.inp.weight, 31)
    pm = prune(m, torch.argsort(s, stable=True)[: round(0.5 * len(s))])
    with torch.no_grad():
        a2 = pm.logits(tr.x).argmax(1)
    fit_before, fit_after = 1.0, float((a2[corr] == tr.y[corr]).float().mean())
    true_after = float((a2[corr] == tr.fields["clean_y"][corr]).float().mean())
    assert fit_after < fit_before - 0.1 and true_after > 0.05
    assert float((a2[~corr] == tr.y[~corr]).float().mean()) > 0.95
