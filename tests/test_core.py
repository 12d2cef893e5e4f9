"""Core: registry, threat-model geometry, per-example RNG, adapters and safe model loading."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from robustlab.core.errors import (
    ConfigError,
    DomainError,
    UnknownComponentError,
    UnsafeFileError,
)
from robustlab.core.registry import Registry, attacks, check_params, models, perturbations
from robustlab.core.rng import ExampleRNG, hash32
from robustlab.core.types import Domain, ThreatModel, lp_project
from robustlab.models import SklearnClassifier, TorchClassifier
from robustlab.models.loading import load_model_file


# registry ---------------------------------------------------------------------------------------
def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownComponentError, match=r"unknown attacks 'pdg'; did you mean 'pgd'\?"):
        attacks.get("pdg")


def test_builtins_are_discovered_lazily_and_listed():
    assert {"fgsm", "pgd"} <= set(attacks.names())
    assert "gaussian_noise" in perturbations


def test_params_are_checked_against_the_signature():
    with pytest.raises(ConfigError, match="no parameter 'stepz'; did you mean 'steps'"):
        attacks.create("pgd", {"stepz": 3})
    with pytest.raises(ConfigError, match="'steps' must be int, got str"):
        attacks.create("pgd", {"steps": "ten"})
    with pytest.raises(ConfigError, match="needs parameter 'path'"):
        check_params(models.get("file"), {}, "model 'file'")


def test_a_name_registers_once():
    reg: Registry[object] = Registry("things")
    reg.register("a")(int)
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("a")(float)


# threat models ----------------------------------------------------------------------------------
def _l1_projection_reference(v: np.ndarray, eps: float) -> np.ndarray:
    """Projection onto the L1 ball by bisection on the soft threshold (independent of the sort)."""
    if np.abs(v).sum() <= eps:
        return v
    lo, hi = 0.0, np.abs(v).max()
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.clip(np.abs(v) - mid, 0, None).sum() > eps:
            lo = mid
        else:
            hi = mid
    return np.sign(v) * np.clip(np.abs(v) - hi, 0, None)


@pytest.mark.parametrize("norm", ["inf", "2", "1"])
def test_projection_lands_in_the_ball_and_domain(norm):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=g)
    x_adv = x + torch.randn(16, 1, 8, 8, generator=g)
    threat = ThreatModel(norm, 0.7)
    p = threat.project(x_adv, x, Domain(0, 1))
    assert (threat.distance(p, x) <= 0.7 + 1e-5).all()
    assert p.min() >= 0 and p.max() <= 1


def test_l1_projection_matches_bisection_reference():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(20, 50, generator=g, dtype=torch.float64)
    got = lp_project(v, "1", 3.0).numpy()
    for i in range(20):
        np.testing.assert_allclose(got[i], _l1_projection_reference(v[i].numpy(), 3.0), atol=1e-9)


def test_l2_projection_is_the_closest_point():
    v = torch.tensor([[3.0, 4.0]])
    assert torch.allclose(lp_project(v, "2", 1.0), torch.tensor([[0.6, 0.8]]))


@pytest.mark.parametrize("norm", ["inf", "2", "1"])
def test_sample_stays_in_the_ball(norm):
    x = torch.full((32, 3, 4, 4), 0.5)
    rng = ExampleRNG.from_seed(0, torch.arange(32))
    threat = ThreatModel(norm, 0.3)
    s = threat.sample(x, Domain(0, 1), rng.uniform(3, 4, 4))
    assert (threat.distance(s, x) <= 0.3 + 1e-6).all()
    assert (threat.distance(s, x) > 0).all()


def test_bad_threat_models_are_refused():
    with pytest.raises(ConfigError, match="unknown norm"):
        ThreatModel("3", 0.1)
    with pytest.raises(ConfigError, match="eps must be"):
        ThreatModel("inf", -1)


def test_domain_check_names_the_problem():
    d = Domain(0, 1, (1, 8, 8))
    with pytest.raises(DomainError, match=r"outside the model's input domain \[0, 1\]"):
        d.check(torch.full((2, 1, 8, 8), 2.0))
    with pytest.raises(DomainError, match="channels last"):
        Domain(0, 1, (3, 8, 8)).check(torch.rand(2, 8, 8, 3))
    with pytest.raises(DomainError, match="NaN"):
        d.check(torch.full((2, 1, 8, 8), float("nan")))
    one_bad = torch.rand(2, 1, 8, 8)
    for bad in (float("nan"), float("inf"), float("-inf")):
        one_bad[1, 0, 3, 4] = bad  # a single value anywhere is caught, even with open bounds
        with pytest.raises(DomainError, match="NaN or inf"):
            d.check(one_bad)
        with pytest.raises(DomainError, match="NaN or inf"):
            Domain(float("-inf"), float("inf")).check(one_bad)
    d.check(torch.rand(0, 1, 8, 8))  # an empty batch fits any domain
    d.check(torch.rand(3, 1, 8, 8))
    any_c = Domain(0, 1, (None, 8, 8))  # None matches any size; the rest must still match
    any_c.check(torch.rand(2, 3, 8, 8))
    with pytest.raises(DomainError, match=r"per-example shape \(3, 8, 9\)"):
        any_c.check(torch.rand(2, 3, 8, 9))
    with pytest.raises(DomainError, match="per-example shape"):
        d.check(torch.rand(2, 1, 8))


# rng ------------------------------------------------------------------------------------------
def test_hash32_matches_the_reference_lowbias32():
    def ref(x: int) -> int:
        m = 0xFFFFFFFF
        x ^= x >> 16
        x = (x * 0x7FEB352D) & m
        x ^= x >> 15
        x = (x * 0x846CA68B) & m
        return x ^ (x >> 16)

    xs = [0, 1, 2, 12345, 0xFFFFFFFF, 0xDEADBEEF]
    assert hash32(torch.tensor(xs)).tolist() == [ref(x) for x in xs]


def test_rng_streams_are_per_example():
    ids = torch.arange(100)
    a = ExampleRNG.from_seed(3, ids).normal(10)
    b = ExampleRNG.from_seed(3, ids.flip(0)).normal(10).flip(0)
    assert torch.equal(a, b)  # batch order does not matter
    c = ExampleRNG.from_seed(3, ids[40:60]).normal(10)
    assert torch.equal(a[40:60], c)  # neither does batch composition
    assert not torch.equal(a, ExampleRNG.from_seed(4, ids).normal(10))


def test_rng_take_keeps_draws_aligned():
    ids = torch.arange(10)
    full = ExampleRNG.from_seed(0, ids)
    full.uniform(3)
    second = full.uniform(3)
    r = ExampleRNG.from_seed(0, ids)
    r.uniform(3)
    sub = r.take(torch.tensor([2, 7]))
    assert torch.equal(sub.uniform(3), second[[2, 7]])


def test_rng_draw_bases_equal_draw_base_calls():
    a, b = ExampleRNG.from_seed(5, torch.arange(7)), ExampleRNG.from_seed(5, torch.arange(7))
    a.uniform(3), b.uniform(3)  # a counter not at 0
    keys = a.draw_bases(5)
    assert torch.equal(keys, torch.stack([b.draw_base() for _ in range(5)]))
    assert a.position == b.position == 6
    assert torch.equal(a.uniform(2), b.uniform(2))  # the counter advanced alike
    a.draw_bases(4)
    a.seek(8)  # drew ahead: back to where one more draw leaves the counter
    b.uniform(1)
    assert torch.equal(a.uniform(2), b.uniform(2))
    with pytest.raises(ValueError, match="position"):
        a.seek(-1)


def test_rng_distribution():
    from scipy import stats

    z = ExampleRNG.from_seed(0, torch.arange(200)).normal(500).flatten().double().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    u = ExampleRNG.from_seed(1, torch.arange(200)).uniform(500).flatten().double().numpy()
    assert stats.kstest(u, "uniform").pvalue > 1e-3


# adapters and loading -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cnn() -> TorchClassifier:
    return models.create("digits-cnn")


def test_torch_adapter_normalizes_inside(cnn):
    net = cnn.module
    wrapped = TorchClassifier(net, 10, Domain(0, 1, (1, 8, 8)), mean=[0.5], std=[2.0])
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(wrapped.logits(x), net((x - 0.5) / 2.0))
    assert wrapped.fingerprint() != cnn.fingerprint()  # normalization is part of the model


def test_fingerprint_tracks_weights(cnn):
    other = models.create("digits-cnn", {"seed": 1})
    assert cnn.fingerprint() == models.create("digits-cnn").fingerprint()
    assert cnn.fingerprint() != other.fingerprint()


def test_torchscript_files_load_without_pickle(cnn, tmp_path):
    path = tmp_path / "m.pt"
    torch.jit.script(cnn.module).save(str(path))
    clf = load_model_file(path, num_classes=10, domain=Domain(0, 1))
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(clf.logits(x), cnn.logits(x), atol=1e-5)


def test_pickled_models_are_refused_by_default(cnn, tmp_path):
    path = tmp_path / "m.pt"
    torch.save(cnn.module, path)
    with pytest.raises(UnsafeFileError, match="allow_pickle=True"):
        load_model_file(path, num_classes=10)
    clf = load_model_file(path, num_classes=10, allow_pickle=True)
    assert clf.logits(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    pkl = tmp_path / "m.pkl"
    pkl.write_bytes(pickle.dumps({"not": "a model"}))
    with pytest.raises(UnsafeFileError):
        load_model_file(pkl)
    garbage = tmp_path / "g.pt"
    garbage.write_bytes(b"\x00garbage")
    with pytest.raises(UnsafeFileError, match="cannot read"):
        load_model_file(garbage, num_classes=10)


def test_state_dict_files_explain_what_to_do(cnn, tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(cnn.module.state_dict(), path)
    with pytest.raises(ConfigError, match="state dict"):
        load_model_file(path, num_classes=10)


def test_sklearn_adapter_is_black_box():
    clf = models.create("digits-logreg")
    assert isinstance(clf, SklearnClassifier)
    assert not clf.capabilities.grad and clf.capabilities.probs_only
    out = clf.logits(torch.rand(5, 1, 8, 8))
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-4)


# slices ---------------------------------------------------------------------------------------
def test_slices_by_metadata_predicate_and_where():
    import pandas as pd

    from robustlab.data.slices import Slice, by_metadata, summarize_slices, where

    df = pd.DataFrame(
        {
            "model": "m", "kind": "clean", "probe": "clean", "level": 0.0, "replicate": 0,
            "example_id": range(6), "correct": [1.0, 0.0, 1.0, 1.0, 0.0, 0.0], "error": None,
            "m.label": ["2", "10", "2", "10", "2", "1"], "m.ink": ["a", "b", "a", "a", "b", "b"],
        }
    )  # fmt: skip
    by = by_metadata(df, "label")
    assert [s.name for s in by] == ["label=1", "label=2", "label=10"]  # natural order
    heavy = where("a-ink label 2", ink=["a"], label=[2])  # YAML ints match text metadata
    even = Slice("even ids", lambda r: r["example_id"] % 2 == 0)
    out = summarize_slices(df, [*by, heavy, even]).set_index("slice")["value"]
    assert out["label=2"] == pytest.approx(2 / 3) and out["label=10"] == 0.5
    assert out["a-ink label 2"] == 1.0 and out["even ids"] == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="no metadata column 'colour'"):
        by_metadata(df, "colour")
