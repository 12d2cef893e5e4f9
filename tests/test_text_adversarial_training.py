"""The text-at trainer (training/text_at.py) and MVP vs an MLP head under TextFooler (slow).

References: robustlab's TextFooler called directly with the same per-example streams (the
trainer's augmentation must be exactly its successful outputs), cross-entropy recomputed over the
augmented batch, the attack-independent word edit rate; data: BBC News (first 20-30 words).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import robustlab
from robustlab.attacks.text import word_edit_rate
from robustlab.core.registry import attacks, datasets, models, trainers
from robustlab.core.rng import ExampleRNG
from robustlab.training.trainers import Position

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DP = {"limit": 60, "max_words": 20}
CHEAP = {"max_candidates": 6, "max_queries": 15, "min_similarity": 0.0}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("text-at-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTLAB_CACHE", str(root))
        yield root


def test_step_adds_exactly_the_attacks_successes(cache: Path) -> None:
    # zero-shot (errs and is attackable); its base data only sets the classes and a warm cache
    mvp = models.create("minilm-mvp", {"data_params": {"limit": 10, "max_words": 20}})
    data = datasets.create("bbc-news", {"split": "test", "limit": 10, "max_words": 20})
    x, y = data.x, data.y
    t = trainers.create("text-at", {"attack_params": CHEAP, "budget": 0.2, "adv_fraction": 0.8})
    rng = ExampleRNG.from_seed("t", data.ids)
    step = t.step(mvp, x, y, rng, Position(epoch=1, epochs=2))
    # the reference: TextFooler on the first ceil(0.8 * 10) = 8 texts with the same streams
    ref = attacks.create("textfooler", CHEAP)(
        mvp, x[:8], y[:8], 0.2, rng=ExampleRNG.from_seed("t", data.ids).take(torch.arange(8))
    )
    ok = [i for i in range(8) if bool(ref.success[i]) and ref.x_adv[i] != x[i]]
    assert ok, "the zero-shot model resisted every attack: the test would check nothing"
    adv = [ref.x_adv[i] for i in ok]
    assert (word_edit_rate([x[i] for i in ok], adv) <= 0.2 + 1e-9).all()
    with torch.no_grad():
        assert (mvp.logits(adv).argmax(1) != y[ok]).all()  # adversarial under the model
        want = F.cross_entropy(mvp.logits(x + adv), torch.cat([y, y[ok]]))
        torch.testing.assert_close(step.loss.detach(), want, atol=1e-5, rtol=1e-5)
        assert step.logits.shape == (10, 5)  # training accuracy is read on the clean batch
    step.loss.backward()  # differentiable in the head's weights
    assert mvp.module.prototypes.grad is not None
    # during clean_epochs: the clean loss only
    t2 = trainers.create("text-at", {"attack_params": CHEAP, "clean_epochs": 1})
    clean = t2.step(mvp, x, y, rng, Position(epoch=1, epochs=2))
    with torch.no_grad():
        torch.testing.assert_close(clean.loss.detach(), F.cross_entropy(mvp.logits(x), y))


def test_text_at_trains_through_the_loop(cache: Path) -> None:
    spec = {
        "base": {"name": "minilm-mlp", "params": {"data_params": DP, "hidden": 32}},
        "data": {"name": "bbc-news", "params": {"split": "train", **DP}},
        "trainer": {"name": "text-at", "params": {"attack_params": CHEAP, "budget": 0.2,
                                                  "adv_fraction": 0.1, "lr": 0.01,
                                                  "batch_size": 32, "clean_epochs": 1}},
        "epochs": 2, "holdout": 10,
    }  # fmt: skip
    clf = robustlab.train(spec, progress=False)
    hist = clf.provenance["history"]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all("clean_acc" in h and "pgd_acc" not in h for h in hist)  # no image attack on texts
    assert clf.provenance["train_examples"] == 50 and clf.provenance["holdout_examples"] == 10


# the qualitative claims, at benchmarks/mvp_robustness.py's settings (its trained models are cache
# hits here: the default model cache, keyed by content hash), on the first 30 of its 60 test texts
# with a 20-query attack (the slow-test budget; the 60-text numbers are in docs/mvp.md)
SLOW_DP = {"limit": 200, "max_words": 30}
SLOW_AT = {"attack_params": {"max_candidates": 8, "max_queries": 20, "min_similarity": 0.0},
           "budget": 0.2, "clean_epochs": 17}  # fmt: skip


def _trained(base: str, trainer: str, params: dict[str, Any], epochs: int) -> Any:
    lr = {"minilm-mlp": 3e-3, "minilm-mvp": 1e-2}[base]
    return robustlab.train({
        "base": {"name": base, "params": {"dataset": "bbc-news", "data_params": SLOW_DP}},
        "data": {"name": "bbc-news", "params": {"split": "train", **SLOW_DP}},
        "trainer": {"name": trainer, "params": {"lr": lr, "batch_size": 32, **params}},
        "epochs": epochs, "holdout": 0,
    }, progress=False)  # fmt: skip


def _clean_robust(clf: Any, test: Any) -> tuple[float, float]:
    atk = attacks.create("textfooler", {"max_candidates": 8, "max_queries": 20})
    res = atk(clf, test.x, test.y, 0.2, rng=ExampleRNG.from_seed(0, test.ids))
    with torch.no_grad():
        clean = clf.logits(test.x).argmax(1) == test.y
        after = clf.logits(res.x_adv).argmax(1) == test.y
    assert (word_edit_rate(test.x, res.x_adv) <= 0.2 + 1e-9).all()
    return float(clean.float().mean()), float((clean & after).float().mean())


@pytest.mark.slow
def test_mvp_vs_mlp_and_adversarial_training_on_bbc() -> None:
    test = datasets.create("bbc-news", {"split": "test", "limit": 30, "max_words": 30})
    one = 1 / len(test) + 1e-9  # one text
    acc = {
        "mlp": _clean_robust(_trained("minilm-mlp", "standard", {}, 20), test),
        "mvp": _clean_robust(_trained("minilm-mvp", "standard", {}, 20), test),
        "mlp-at": _clean_robust(_trained("minilm-mlp", "text-at", SLOW_AT, 20), test),
        "mvp-at": _clean_robust(_trained("minilm-mvp", "text-at", SLOW_AT, 20), test),
    }
    print(acc)
    (c_mlp, r_mlp), (c_mvp, r_mvp) = acc["mlp"], acc["mvp"]
    # the claim's premise, similar clean accuracy, and an effective attack (on MVP alone it may
    # find nothing on these few texts at 20 queries)
    assert c_mlp >= 0.7 and c_mvp >= 0.7 and abs(c_mlp - c_mvp) <= 0.1, acc
    assert acc["mlp"][1] < acc["mlp"][0] and sum(r for _, r in acc.values()) < sum(
        c for c, _ in acc.values()), acc  # fmt: skip
    # "MVP is more robust" does NOT reproduce with a frozen encoder (docs/mvp.md: 0.717 vs 0.767
    # on 60 texts): the prompt head is no more robust than the MLP head, to within one text
    assert r_mvp <= r_mlp + one, acc
    # text-at (3 cheap adversarial epochs after 17 clean ones) keeps clean accuracy and does not
    # lower robust accuracy by more than two texts; it does not raise it measurably either
    for base in ("mlp", "mvp"):
        assert acc[f"{base}-at"][0] >= acc[base][0] - 0.1, acc
        assert acc[f"{base}-at"][1] >= acc[base][1] - 2 * one, acc
