"""Square keeps the examples still in its batch compacted, and the ensemble hands each member only
the examples not yet fooled: the bookkeeping must not change any example's result."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup() -> tuple[Any, torch.Tensor, torch.Tensor]:
    d = datasets.get("digits")(split="test")
    return models.create("digits-cnn"), d.x[:48], d.y[:48]


def _rng(ids: torch.Tensor) -> ExampleRNG:
    return ExampleRNG.from_seed(0, ids)


@pytest.mark.parametrize("norm,eps", [("inf", 0.1), ("2", 1.0)])
def test_square_example_alone_equals_in_batch(setup: Any, norm: str, eps: float) -> None:
    clf, x, y = setup
    threat, n = ThreatModel(norm, eps), len(x)
    full = attacks.create("square", {"n_queries": 200})(
        clf, x, y, threat, rng=_rng(torch.arange(n))
    )
    # examples leave the batch at different iterations; each one's result is its own
    fooled = torch.nonzero(full.success & (full.queries > 2)).flatten()
    assert fooled.numel() >= 2 and bool((~full.success).any())
    with torch.no_grad():
        clean_ok = clf.logits(x).argmax(1) == y
    picks = [*fooled[:3].tolist(), *torch.nonzero(~full.success).flatten()[:2].tolist()]
    for i in picks:
        ids = torch.tensor([i])
        one = attacks.create("square", {"n_queries": 200})(
            clf, x[ids], y[ids], threat, rng=_rng(ids)
        )
        assert torch.equal(one.x_adv[0], full.x_adv[i])
        assert int(one.queries[0]) == int(full.queries[i])
    # never fooled: the initial query plus one per iteration; fooled: stopped at the hit
    assert bool((full.queries[~full.success] == 201).all())
    assert bool((full.queries[full.success & clean_ok] <= 201).all())
    assert bool((full.queries[~clean_ok] == 1).all())
    with torch.no_grad():
        assert torch.equal(clf.logits(full.x_adv).argmax(1) != y, full.success)


def test_ensemble_members_see_only_unfooled_examples(setup: Any) -> None:
    clf, x, y = setup
    seen: list[torch.Tensor] = []
    members = [{"name": "apgd", "steps": 5}, {"name": "square", "n_queries": 30}]
    ens = attacks.create("autoattack", {"attacks": members})
    made = ens.members()

    class Spy:
        def __init__(self, atk: Any) -> None:
            self.atk = atk

        def __call__(self, model: Any, xs: torch.Tensor, ys: torch.Tensor, *a: Any, **k: Any):  # type: ignore[no-untyped-def]
            seen.append(xs)
            return self.atk(model, xs, ys, *a, **k)

    ens.members = lambda: [(name, Spy(atk)) for name, atk in made]  # type: ignore[method-assign]
    res = ens(clf, x, y, ThreatModel("inf", 0.1), rng=_rng(torch.arange(len(x))))
    with torch.no_grad():
        clean_ok = clf.logits(x).argmax(1) == y
    assert len(seen[0]) == int(clean_ok.sum())  # clean errors are not attacked
    first = res.extra["member"] == 0
    assert len(seen[1]) == int(clean_ok.sum() - first.sum())  # nor examples APGD already fooled
