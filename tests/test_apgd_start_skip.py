"""APGD / APGD-T start-time skip (issue 22): examples that already meet the goal at the clean input
are recorded as fooled without iterating; every other example gets exactly what the loop without
the skip gives it (real digits images and the trained digits CNN)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robustlab.attacks.apgd_core import apgd_run
from robustlab.attacks.base import Misclassified, until_fooled
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rng(n: int, seed: int = 0) -> ExampleRNG:
    return ExampleRNG.from_seed(seed, torch.arange(n))


@pytest.fixture(scope="module")
def setup() -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """digits-cnn and 80 real test images of which about a third are already misclassified: the
    first 30 moved by PGD-10 at Linf 0.15 (real images, real adversarial inputs), the rest clean."""
    clf = models.create("digits-cnn")
    d = datasets.get("digits")(split="test")
    x, y = d.x[:80].clone(), d.y[:80]
    pgd = attacks.create("pgd", {"steps": 10})
    x[:30] = pgd(clf, x[:30], y[:30], ThreatModel("inf", 0.15), rng=rng(30, seed=5)).x_adv
    with torch.no_grad():
        wrong = clf.logits(x).argmax(1) != y
    assert 10 <= int(wrong.sum()) <= 40  # both kinds present
    return clf, x, y, wrong


def _no_skip_apgd(clf: Any, x: torch.Tensor, y: torch.Tensor, th: ThreatModel, **kw: Any) -> Any:
    """APGD as it was before the skip: the loop on every example, from its random start."""
    out, ok, q = apgd_run(clf, x, y, None, th, Misclassified(), "ce", kw["steps"], rng(len(x)),
                          kw.get("early_stop", True))  # fmt: skip
    return out, ok, q


def _no_skip_apgd_t(clf: Any, x: torch.Tensor, y: torch.Tensor, th: ThreatModel, steps: int,
                    n_targets: int) -> Any:  # fmt: skip
    """APGD-T as it was before the skip: every target run starts on every example not yet fooled
    by an earlier target (clean errors included)."""
    r = rng(len(x))
    with torch.no_grad():
        z = clf.logits(x)
    order = z.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
    return until_fooled(
        x,
        range(n_targets),
        lambda todo, k: apgd_run(clf, x[todo], y[todo], order[todo, k], th, Misclassified(),
                                 "dlr", steps, r.take(todo)),
        queries=torch.ones(len(x), dtype=torch.long),
    )  # fmt: skip


@pytest.mark.parametrize("early_stop", [True, False])
def test_apgd_skip_changes_nothing_for_correct_examples(setup: Any, early_stop: bool) -> None:
    clf, x, y, wrong = setup
    th = ThreatModel("inf", 0.05)
    res = attacks.create("apgd", {"steps": 20, "early_stop": early_stop})(
        clf, x, y, th, rng=rng(80)
    )
    out, ok, q = _no_skip_apgd(clf, x, y, th, steps=20, early_stop=early_stop)
    right = ~wrong
    # correctly classified at x: the same point, verdict and queries (+1: the pass at x)
    assert torch.equal(res.x_adv[right], out[right])
    assert torch.equal(res.success[right], ok[right].cpu())
    assert torch.equal(res.queries[right], q[right].cpu() + 1)
    # already adversarial at x: recorded as fooled at x with that one pass, never iterated; the
    # loop without the skip finds them fooled as well (nothing found is lost)
    assert bool(res.success[wrong].all()) and bool(ok[wrong].all())
    assert torch.equal(res.x_adv[wrong], x[wrong])
    assert bool((res.queries[wrong] == 1).all())
    _inside(clf, res.x_adv, x, th)


def test_apgd_t_skip_changes_nothing_for_correct_examples(setup: Any) -> None:
    clf, x, y, wrong = setup
    th = ThreatModel("inf", 0.05)
    res = attacks.create("apgd_t", {"steps": 10, "n_targets": 3})(clf, x, y, th, rng=rng(80))
    ref = _no_skip_apgd_t(clf, x, y, th, steps=10, n_targets=3)
    right = ~wrong
    assert torch.equal(res.x_adv[right], ref.x_adv[right])
    assert torch.equal(res.success[right], ref.success[right])
    assert torch.equal(res.queries[right], ref.queries[right])  # the pass at x was counted before
    assert bool(res.success[wrong].all()) and bool(ref.success[wrong].all())
    assert torch.equal(res.x_adv[wrong], x[wrong]) and bool((res.queries[wrong] == 1).all())
    _inside(clf, res.x_adv, x, th)


def test_skip_in_the_ensemble_and_restarts(setup: Any) -> None:
    """Restarts and the ensemble see the skip the same way: clean errors keep x, everything
    returned stays in the ball and the domain, and the success flags are the model's verdict."""
    clf, x, y, wrong = setup
    th = ThreatModel("inf", 0.05)
    for name, params in (
        ("apgd", {"steps": 10, "restarts": 2}),
        ("autoattack", {"attacks": [{"name": "apgd", "steps": 10},
                                    {"name": "apgd_t", "steps": 5, "n_targets": 2}]}),
    ):  # fmt: skip
        res = attacks.create(name, params)(clf, x, y, th, rng=rng(80))
        assert bool(res.success[wrong].all()) and torch.equal(res.x_adv[wrong], x[wrong]), name
        with torch.no_grad():
            assert torch.equal(res.success, clf.logits(res.x_adv).argmax(1) != y), name
        _inside(clf, res.x_adv, x, th)


def _inside(clf: Any, x_adv: torch.Tensor, x: torch.Tensor, th: ThreatModel) -> None:
    assert float((x_adv - x).abs().max()) <= th.eps + 1e-6
    assert float(x_adv.min()) >= clf.domain.lo and float(x_adv.max()) <= clf.domain.hi
