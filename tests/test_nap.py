"""Neural activation patterns (S27): mining threshold, recall, exact verification over a pattern."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from robustlab.certify.milp import COUNTEREXAMPLE, ROBUST, UNDECIDED, relu_chain, verify
from robustlab.certify.nap import matches, mine_naps, nap_recall, pre_activations, verify_nap
from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup() -> Any:
    train = datasets.get("digits")(split="train")
    test = datasets.get("digits")(split="test")
    return models.create("digits-mlp-ibp"), train, test


def test_mining_threshold_and_recall(setup: Any) -> None:
    clf, train, test = setup
    naps = mine_naps(clf, train.x, train.y, delta=0.99)
    # reference: the per-class activation frequencies, computed directly with torch hooks
    acts = []
    hook = [m for m in clf.module.modules() if isinstance(m, torch.nn.ReLU)]
    handles = [m.register_forward_hook(lambda m, i, o: acts.append(i[0] > 0)) for m in hook]
    with torch.no_grad():
        clf.logits(train.x)
    for h in handles:
        h.remove()
    act = torch.cat(acts, dim=1).numpy()
    for c, nap in naps.items():
        freq = act[train.y.numpy() == c].mean(axis=0)
        np.testing.assert_array_equal(nap.phases > 0, freq >= 0.99)
        np.testing.assert_array_equal(nap.phases < 0, freq <= 0.01)
        assert nap.size > 10
    rec = nap_recall(clf, naps, test.x, test.y)
    assert set(rec) == set(range(10)) and np.mean(list(rec.values())) > 0.8
    # a stricter threshold fixes fewer neurons, so it can only recall more
    loose = nap_recall(clf, mine_naps(clf, train.x, train.y, delta=0.9), test.x, test.y)
    assert all(rec[c] >= loose[c] for c in rec)


def test_verified_patterns_are_sound_and_counterexamples_real(setup: Any) -> None:
    clf, train, test = setup
    naps = mine_naps(clf, train.x, train.y, delta=0.99)
    chain = relu_chain(clf)
    seen = {ROBUST: 0, COUNTEREXAMPLE: 0}
    for i in range(6):
        x, c = test.x[i : i + 1], int(test.y[i])
        if not bool(matches(clf, naps[c], x)[0]) or int(clf.logits(x).argmax()) != c:
            continue
        for eps in (0.1, 0.2):
            status, _, xc = verify_nap(clf, naps[c], x, eps, time_limit=20)
            seen[status] = seen.get(status, 0) + 1
            flat = x.flatten().double().numpy()
            lo, hi = np.clip(flat - eps, 0, 1), np.clip(flat + eps, 0, 1)
            plain, _, _ = verify(chain, lo, hi, c, 20)
            assert not (plain == ROBUST and status != ROBUST)  # the pattern only shrinks the set
            if status == COUNTEREXAMPLE:  # in the ball, matching exactly (no tolerance)
                xt = torch.from_numpy(xc).view(1, 1, 8, 8)
                assert np.all(xc >= lo) and np.all(xc <= hi)
                assert bool(matches(clf, naps[c], xt)[0])
                assert int(_float64(clf).logits(xt).argmax()) != c
            elif status == ROBUST:  # sampled points of the ball that match the pattern keep class c
                rng = ExampleRNG.from_seed(i, torch.arange(2000))
                pts = ThreatModel("inf", eps).sample(x.repeat(2000, 1, 1, 1), clf.domain,
                                                     rng.uniform(1, 8, 8))  # fmt: skip
                keep = matches(clf, naps[c], pts)
                assert bool((clf.logits(pts[keep]).argmax(1) == c).all())
    assert seen[ROBUST] > 0 and seen[COUNTEREXAMPLE] > 0
    # over the whole input domain the digits MLP's patterns do not imply the class
    status, _, xc = verify_nap(clf, naps[0], time_limit=20)
    assert status == COUNTEREXAMPLE
    xt = torch.from_numpy(xc).view(1, 1, 8, 8)
    assert bool(matches(clf, naps[0], xt)[0]) and int(_float64(clf).logits(xt).argmax()) != 0


def _float64(clf: Any) -> Any:
    """The model's module evaluated in float64 (independent of the verifier's chain)."""
    from robustlab.models.torch_adapter import TorchClassifier

    return TorchClassifier(copy.deepcopy(clf.module).double(), clf.num_classes, clf.domain)


@pytest.mark.slow
def test_every_counterexample_matches_and_is_misclassified(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the input domain, each class's NAP (delta 0.99) is refuted. Every counterexample
    verify_nap returns follows the pattern exactly (matches, no tolerance) and the model in
    float64 misclassifies it; rounded to float32 it still does (the interior point keeps a slack
    of the phases and the margin far above float32 rounding). The solver's own vertices, without
    that step, sit on phase boundaries (slack ~1e-16): float64 rounding puts some outside the
    pattern (those classes become UNDECIDED, never a counterexample matches rejects) and float32
    rounding most of them."""
    clf, train, _ = setup
    naps = mine_naps(clf, train.x, train.y, delta=0.99)
    chain, m64 = relu_chain(clf), _float64(clf)
    for c in (0, 8):
        status, _, xc = verify_nap(clf, naps[c], time_limit=20)
        assert status == COUNTEREXAMPLE
        x64 = torch.from_numpy(xc).view(1, 1, 8, 8)
        assert bool(matches(clf, naps[c], x64)[0]) and int(m64.logits(x64).argmax()) != c
        slack = (pre_activations(chain, x64)[0] * naps[c].phases)[naps[c].phases != 0].min()
        assert slack > 1e-3  # an interior point of the pattern
        x32 = x64.float()
        assert bool(matches(clf, naps[c], x32)[0]) and int(clf.logits(x32).argmax()) != c
    import robustlab.certify.milp as milp

    monkeypatch.setattr(milp, "_interior", lambda *a, **k: None)  # the solver's vertices only
    for c in (0,):  # ~9 s CPU: the vertex search runs to optimality
        status, _, xc = verify_nap(clf, naps[c], time_limit=20)
        if status == COUNTEREXAMPLE:
            x64 = torch.from_numpy(xc).view(1, 1, 8, 8)
            assert bool(matches(clf, naps[c], x64)[0]) and int(m64.logits(x64).argmax()) != c
            slack = (pre_activations(chain, x64)[0] * naps[c].phases)[naps[c].phases != 0].min()
            assert slack < 1e-9  # on a boundary: float32 rounding can put it on either side
            # (measured, docs/diagnose-nap.md: 7 of 8 classes' vertices no longer match in float32)
        else:  # the vertex fell outside the pattern (or wall-clock time ran out under load)
            assert status == UNDECIDED


def test_pre_activations_match_the_module(setup: Any) -> None:
    clf, _, test = setup
    z = pre_activations(relu_chain(clf), test.x[:16])
    first = clf.module.net[1](clf.module.net[0](test.x[:16])).detach().double().numpy()
    np.testing.assert_allclose(z[:, : first.shape[1]], first, atol=1e-5)


def test_bad_input(setup: Any) -> None:
    clf, train, test = setup
    with pytest.raises(ConfigError, match="delta"):
        mine_naps(clf, train.x, train.y, delta=0.3)
    naps = mine_naps(clf, train.x[:200], train.y[:200])
    with pytest.raises(ConfigError, match="both"):
        verify_nap(clf, naps[0], test.x[:1])
    with pytest.raises(ConfigError, match="eps"):
        verify_nap(clf, naps[0], test.x[:1], eps=-1.0)
