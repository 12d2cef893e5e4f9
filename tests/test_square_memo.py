"""Square's Linf refusal memo (issue 22): a proposal an example was refused before from the same
point is not asked again. Results must be bit-identical to asking every time (x_adv, success,
queries), on real digits images with the trained digits CNN, untargeted and targeted, for grey and
3-channel images and for the whole-image-mask path (images taller than wide); fewer model rows."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import robustlab.attacks.square as square_mod
from robustlab.attacks.base import Targeted
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Domain, ThreatModel
from robustlab.models import TorchClassifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Counting:
    """The model, counting the rows it is asked about (instrumentation, same answers)."""

    def __init__(self, model: Any) -> None:
        self.model, self.rows = model, 0
        self.domain, self.num_classes = model.domain, model.num_classes
        self.capabilities = model.capabilities

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.model.logits(x)


@pytest.fixture(scope="module")
def digits() -> tuple[Any, torch.Tensor, torch.Tensor]:
    d = datasets.get("digits")(split="test")
    return models.create("digits-cnn"), d.x[:40], d.y[:40]


def _variants(cnn: Any, x: torch.Tensor) -> list[tuple[str, Any, torch.Tensor]]:
    """The digits CNN as given; behind a fixed channel mean (3-channel inputs: 8 sign patterns
    per corner); and behind a 1-column zero pad (8x6 inputs: the whole-image-mask path)."""
    mean3 = nn.Conv2d(3, 1, 1, bias=False)
    nn.init.constant_(mean3.weight, 1 / 3)
    rgb = TorchClassifier(nn.Sequential(mean3, cnn.module).eval(), 10, Domain(0.0, 1.0, (3, 8, 8)))
    tall = TorchClassifier(
        nn.Sequential(nn.ZeroPad2d((1, 1, 0, 0)), cnn.module).eval(),
        10,
        Domain(0.0, 1.0, (1, 8, 6)),
    )
    return [("grey", cnn, x), ("rgb", rgb, x.repeat(1, 3, 1, 1)), ("tall", tall, x[..., 1:7])]


def _run(model: Any, x: torch.Tensor, y: torch.Tensor, eps: float, goal: Any, memo: bool,
         monkeypatch: Any) -> tuple[Any, int]:  # fmt: skip
    monkeypatch.setattr(square_mod._Rejected, "MAX_KEYS", 1 << 14 if memo else 0)
    counted = Counting(model)
    res = attacks.create("square", {"n_queries": 400})(
        counted, x, y, ThreatModel("inf", eps), goal=goal,
        rng=ExampleRNG.from_seed(0, torch.arange(len(x))),
    )  # fmt: skip
    return res, counted.rows


@pytest.mark.parametrize("targeted", [False, True])
def test_square_memo_is_bit_identical(digits: Any, monkeypatch: Any, targeted: bool) -> None:
    cnn, x, y = digits
    goal = Targeted() if targeted else None
    yy = (y + 1) % 10 if targeted else y
    for name, model, xs in _variants(cnn, x):
        eps = 0.1 if not targeted else 0.2
        ref, rows_ref = _run(model, xs, yy, eps, goal, False, monkeypatch)
        res, rows = _run(model, xs, yy, eps, goal, True, monkeypatch)
        assert torch.equal(res.x_adv, ref.x_adv), name
        assert torch.equal(res.success, ref.success), name
        assert torch.equal(res.queries, ref.queries), name  # a known refusal is still a query
        assert bool((~ref.success).any()) and bool(ref.success.any()), name  # both kinds
        # the memo saves model rows (3 channels: 8 sign patterns per corner, few repeats in 400)
        assert rows <= (rows_ref if name == "rgb" else 0.8 * rows_ref), (name, rows, rows_ref)
        assert float((res.x_adv - xs).abs().max()) <= eps + 1e-6
        assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0


def test_square_memo_off_for_randomized_models_and_gpus(digits: Any) -> None:
    cnn, x, _ = digits
    assert square_mod._Rejected.for_model(cnn, x) is not None

    class Noisy(Counting):
        randomized = True  # a fresh draw per query: asking again may give another answer

    assert square_mod._Rejected.for_model(Noisy(cnn), x) is None
    assert square_mod._Rejected.for_model(cnn, x.to("meta")) is None
