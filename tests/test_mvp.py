"""MVP-style prompt classification and the MLP head on frozen MiniLM features (models/text_heads.py).

References: the zero-shot prompt scores recomputed by the formula of the module docstring from the
encoder's embeddings of the filled-in templates (the MiniLM encoder itself is checked equal to
sentence-transformers in test_ranking_dense.py), the MLP head applied to those embeddings, and a
bare torch loop (same permutations, Adam, cross-entropy) for the training loop on texts. Data: BBC
News.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import robustlab
from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models
from robustlab.core.rng import seed_from

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DP = {"limit": 60, "max_words": 20}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("mvp-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTLAB_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def st() -> Any:
    from robustlab.models.text_heads import _encoder

    return _encoder(128)


@pytest.fixture(scope="module")
def test_texts() -> Any:
    return datasets.create("bbc-news", {"split": "test", "limit": 12, "max_words": 20})


def _st(st: Any, texts: list[str]) -> torch.Tensor:
    return F.normalize(st.encode(texts).float(), dim=-1)


def test_zero_shot_mvp_is_the_prompt_similarity_formula(
    cache: Path, st: Any, test_texts: Any
) -> None:
    mvp = models.create("minilm-mvp", {"data_params": DP})
    x = test_texts.x
    classes = mvp.classes
    assert classes == ["business", "entertainment", "politics", "sports", "tech"]
    words = ["business", "entertainment", "politics", "sport", "technology"]
    prompts = [
        ("{text}", "{label}"),
        ("News article: {text}", "This is a news article about {label}."),
    ]
    cos = []
    for tin, tlab in prompts:
        f = _st(st, [tin.replace("{text}", t) for t in x])
        p = _st(st, [tlab.replace("{label}", w) for w in words])
        cos.append(f @ p.T)
    want = 20.0 * torch.stack(cos).mean(0)
    with torch.no_grad():
        got = mvp.logits(x)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    # a real zero-shot classifier: well above the 0.2 of chance on BBC topics
    assert float((got.argmax(1) == test_texts.y).float().mean()) >= 0.5


def test_mlp_head_reads_the_sentence_embedding(cache: Path, st: Any, test_texts: Any) -> None:
    mlp = models.create("minilm-mlp", {"data_params": DP, "hidden": 16, "seed": 3})
    f = _st(st, test_texts.x)
    with torch.no_grad():
        torch.testing.assert_close(mlp.logits(test_texts.x), mlp.module(f), atol=1e-4, rtol=1e-4)
    again = models.create("minilm-mlp", {"data_params": DP, "hidden": 16, "seed": 3})
    assert again.fingerprint() == mlp.fingerprint()  # seeded initialisation
    other = models.create("minilm-mlp", {"data_params": DP, "hidden": 16, "seed": 4})
    assert other.fingerprint() != mlp.fingerprint()


def _spec(trainer: dict[str, Any], epochs: int = 3) -> dict[str, Any]:
    return {
        "base": {"name": "minilm-mvp", "params": {"data_params": DP}},
        "data": {"name": "bbc-news", "params": {"split": "train", **DP}},
        "trainer": trainer,
        "epochs": epochs,
        "holdout": 0,
        "seed": 1,
    }


def test_training_on_texts_equals_a_bare_torch_loop(cache: Path) -> None:
    params = {"lr": 0.01, "batch_size": 16}
    clf = robustlab.train(_spec({"name": "standard", "params": params}), progress=False)
    # the bare loop: the same base, permutations, batches, Adam and cross-entropy
    ref = models.create("minilm-mvp", {"data_params": DP})
    train = datasets.create("bbc-news", {"split": "train", **DP})
    opt = torch.optim.Adam(ref.module.parameters(), lr=0.01)
    for epoch in (1, 2, 3):
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(
            seed_from("perm", 1, epoch)))  # fmt: skip
        for i in range(0, len(train), 16):
            idx = perm[i : i + 16].tolist()
            loss = F.cross_entropy(ref.logits([train.x[j] for j in idx]), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for (name, a), b in zip(clf.module.state_dict().items(), ref.module.state_dict().values(),
                            strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)
    hist = clf.provenance["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3] and hist[-1]["train_acc"] > 0.9
    again = robustlab.train(_spec({"name": "standard", "params": params}), progress=False)
    assert again.fingerprint() == clf.fingerprint()  # a cache hit


def test_bad_input_is_refused(cache: Path) -> None:
    with pytest.raises(ConfigError, match="no \\{text\\} placeholder"):
        models.create("minilm-mvp", {"data_params": DP, "prompts": [["{label}", "{label}"]]})
    with pytest.raises(ConfigError, match="template pairs"):
        models.create("minilm-mvp", {"data_params": DP, "prompts": [["{text}", "no label"]]})
    with pytest.raises(ConfigError, match="unknown classes \\['football'\\]"):
        models.create("minilm-mvp", {"data_params": DP, "verbalizer": {"football": "sport"}})
    mvp = models.create("minilm-mvp", {"data_params": DP})
    with pytest.raises(ConfigError, match="text 1 is empty"):
        mvp.logits(["fine", "  "])
    s = _spec({"name": "standard"})
    with pytest.raises(ConfigError, match="not a text dataset"):
        robustlab.train({**s, "data": {"name": "digits", "params": {"split": "train"}}})
    with pytest.raises(ConfigError, match="needs a text attack"):
        robustlab.train({**s, "trainer": {"name": "text-at", "params": {"attack": "fgsm"}}})
