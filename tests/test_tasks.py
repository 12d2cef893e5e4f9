"""Tasks through the runner: failing models, non-finite outputs, generators and rankers."""

from __future__ import annotations

import importlib
import re

import numpy as np
import pandas as pd
import pytest
import torch

from robustlab.core.registry import datasets, models
from robustlab.data.base import Dataset
from robustlab.models import CallableClassifier, CallableGenerator, CallableRanker
from robustlab.runner import Suite, run_suite
from robustlab.store import Store


@models.register("test-picky-cnn")
def picky_cnn(seed: int = 0) -> CallableClassifier:
    """digits-cnn behind a service that rejects inputs with too much ink, and returns NaN for blank ones."""
    inner = models.create("digits-cnn", {"seed": seed})

    def service(x: torch.Tensor) -> torch.Tensor:
        ink = x.flatten(1).mean(1)
        if (ink > 0.37).any():
            raise ValueError(f"input rejected: ink {float(ink.max()):.2f} > 0.37")
        out = inner.logits(x)
        return torch.where((ink < 0.24)[:, None], torch.full_like(out, float("nan")), out)

    return CallableClassifier(service, 10, inner.domain, version=inner.fingerprint())


def test_model_failures_become_per_example_records(tmp_path):
    suite = Suite.from_yaml(
        "name: picky\nmodel: {name: test-picky-cnn}\ndata: {name: digits}\n"
        "probes: [{kind: perturbation, name: brightness, levels: [2]}]\n"
    )
    store = Store(tmp_path / "s.db")
    rid = run_suite(suite, store, progress=False)
    assert store.run_info(rid)["status"] == "complete"
    df = store.records(rid)
    data = datasets.create("digits")
    ink = data.x.flatten(1).mean(1).numpy()
    clean = df[df.kind == "clean"].set_index("example_id").loc[data.ids.numpy()]
    rejected = ink > 0.37
    blank = ink < 0.24
    assert rejected.any() and blank.any()
    assert clean.error[rejected].str.contains("input rejected").all()
    assert clean.error[blank & ~rejected].str.contains("NaN or inf").all()
    ok = ~rejected & ~blank
    assert clean.error[ok].isna().all()
    assert clean.correct[~ok].isna().all() and clean.correct[ok].mean() > 0.9
    # brightness pushes more examples over the ink limit: more failures, still recorded per example
    bright = df[df.probe == "brightness"]
    assert bright.error.notna().sum() > clean.error.notna().sum()


# generation -------------------------------------------------------------------------------------
@datasets.register("test-arithmetic")
def arithmetic(n: int = 40) -> Dataset:
    """Two-operand arithmetic questions with their answers."""
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 100, n), rng.integers(0, 100, n)
    ops = rng.choice(["+", "-", "*"], n)
    prompts = [f"What is {x} {o} {y}?" for x, o, y in zip(a, ops, b, strict=True)]
    answers = [str(eval(f"{x}{o}{y}")) for x, o, y in zip(a, ops, b, strict=True)]  # noqa: S307
    return Dataset(prompts, answers, "arithmetic", meta={"op": list(ops)})


def solver(prompts: list[str]) -> list[str]:
    """A rule-based arithmetic solver; fails (raises) on multiplication of two-digit numbers."""
    out = []
    for p in prompts:
        m = re.match(r"What is (\d+) ([-+*]) (\d+)\?", p)
        if m is None:
            out.append("I don't know")
            continue
        a, op, b = int(m[1]), m[2], int(m[3])
        if op == "*" and a > 9 and b > 9:
            raise RuntimeError("overflow in the multiplication unit")
        out.append(f"The answer is {a + b if op == '+' else a - b if op == '-' else a * b}")
    return out


@models.register("test-solver")
def solver_model(seed: int = 0) -> CallableGenerator:
    """The rule-based arithmetic solver as a generator."""
    return CallableGenerator(solver)


def test_generation_task_through_the_runner(tmp_path):
    suite = Suite.from_yaml(
        "name: gen\ntask: {name: generation, params: {match: contains}}\n"
        "model: {name: test-solver}\ndata: {name: test-arithmetic}\nslices: [{by: op}]\n"
    )
    store = Store(tmp_path / "s.db")
    df = store.records(run_suite(suite, store, progress=False))
    data = arithmetic()
    hard = [bool(re.search(r"\d\d \* \d\d", p)) for p in data.x]
    assert any(hard)
    got = df.set_index("example_id").sort_index()
    assert got.error.notna().tolist() == hard
    assert (got.correct[~np.array(hard)] == 1.0).all()


# ranking ----------------------------------------------------------------------------------------
MODULES = ["json", "csv", "re", "string", "textwrap", "difflib", "heapq", "bisect", "zipfile",
           "tarfile", "gzip", "shutil", "tempfile", "glob", "fnmatch", "pickle", "copy", "pprint",
           "calendar", "datetime", "random", "statistics", "fractions", "decimal", "hashlib",
           "hmac", "secrets", "uuid", "base64", "binascii"]  # fmt: skip


@datasets.register("test-stdlib-docs")
def stdlib_docs() -> Dataset:
    """Known-item search over Python standard-library module docstrings (first line -> body)."""
    docs, queries = [], []
    for name in MODULES:
        doc = (importlib.import_module(name).__doc__ or name).strip().split("\n", 1)
        queries.append(doc[0])
        docs.append(doc[1] if len(doc) > 1 and doc[1].strip() else name)
    x = [{"query": q, "docs": docs} for q in queries]
    y = [[1.0 if j == i else 0.0 for j in range(len(docs))] for i in range(len(docs))]
    return Dataset(x, y, "stdlib-docs", meta={"module": MODULES})


@models.register("test-tfidf-ranker")
def tfidf_ranker(seed: int = 0) -> CallableRanker:
    """TF-IDF cosine ranker (scikit-learn)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    def score(query: str, docs: list[str]) -> np.ndarray:
        vec = TfidfVectorizer().fit(docs + [query])
        d, q = vec.transform(docs), vec.transform([query])
        return (d @ q.T).toarray().ravel()

    return CallableRanker(score)


def test_ranking_task_through_the_runner(tmp_path):
    suite = Suite.from_yaml(
        "name: rank\ntask: {name: ranking, params: {k: 10}}\n"
        "model: {name: test-tfidf-ranker}\ndata: {name: test-stdlib-docs}\n"
    )
    store = Store(tmp_path / "s.db")
    df = store.records(run_suite(suite, store, progress=False))
    assert len(df) == len(MODULES) and df.error.isna().all()
    mrr = df.correct.mean()
    # independent check of MRR@10 with a direct computation
    data, ranker = stdlib_docs(), tfidf_ranker()
    rr = []
    for ex, rel in zip(data.x, data.y, strict=True):
        order = np.argsort(-ranker.scores(ex["query"], ex["docs"]).numpy(), kind="stable")
        rank = int(np.nonzero(np.array(rel)[order] > 0)[0][0]) + 1
        rr.append(1 / rank if rank <= 10 else 0.0)
    assert mrr == pytest.approx(np.mean(rr)) and mrr > 0.2


def test_compare_pairs_models_by_name_and_refuses_mixed_model_sets():
    """Runs of several models are compared model by model (never pooled across models)."""
    from robustlab.core.errors import ConfigError
    from robustlab.metrics import compare

    def recs(model: str, correct: list[float]) -> pd.DataFrame:
        n = len(correct)
        return pd.DataFrame(
            {"model": [model] * n, "replicate": [0] * n, "kind": ["clean"] * n,
             "probe": ["clean"] * n, "level": [0.0] * n, "example_id": list(range(n)),
             "correct": correct, "error": [None] * n}
        )  # fmt: skip

    a = pd.concat([recs("m1", [1.0] * 10), recs("m2", [0.0] * 10)])
    b = pd.concat([recs("m1", [1.0] * 5 + [0.0] * 5), recs("m2", [0.0] * 10)])
    df = compare(a, b, n_boot=200).set_index("model")
    assert df.loc["m1", "diff"] == pytest.approx(-0.5) and df.loc["m2", "diff"] == 0.0
    # one model each (successive versions under different labels): compared with each other
    one = compare(recs("v1", [0.0] * 10), recs("v2", [1.0] * 10), n_boot=200)
    assert "model" not in one and one["diff"].item() == 1.0
    with pytest.raises(ConfigError, match="different models"):
        compare(a, recs("m3", [1.0] * 10))


def test_signed_perturbation_levels_run_from_a_suite(tmp_path):
    """Rotation by -20 and +20 degrees: signed levels are valid for perturbations (not attacks)."""
    suite = Suite.from_yaml(
        "name: signed\nmodel: {name: digits-logreg}\ndata: {name: digits}\n"
        "probes:\n  - {kind: perturbation, name: rotate, levels: [-20, 20]}\n"
    )
    st = Store(tmp_path / "s.db")
    df = st.records(run_suite(suite, st, progress=False))
    rot = df[df.kind == "perturbation"]
    assert sorted(rot["level"].unique()) == [-20.0, 20.0]
    a = rot[rot.level == -20].set_index("example_id")["pred"]
    b = rot[rot.level == 20].set_index("example_id")["pred"]
    assert (a != b.loc[a.index]).any()  # the two directions are different images
    from robustlab.core.errors import ConfigError
    from robustlab.runner.validation import validate_components

    bad = Suite.from_yaml(
        "name: bad\nmodel: {name: digits-logreg}\ndata: {name: digits}\n"
        "probes:\n  - {kind: attack, name: fgsm, levels: [-0.1]}\n"
    )
    with pytest.raises(ConfigError, match=r"level 0 \(-0.1\) is outside its domain.*>= 0"):
        validate_components(bad)  # the level domains are checked by validation (run calls it)


def test_a_shards_attack_units_share_its_clean_evaluation(
    tmp_path, small_suite, canonical_records, monkeypatch
):
    """An FGSM sweep over 3 levels evaluates the clean shard once per run (the clean unit's
    evaluation is shared; a second run in the same process evaluates it again), and its records
    equal those of attack units that evaluate clean inputs themselves."""
    from robustlab.tasks.classification import ClassificationTask

    clean_x = datasets.create("digits", {"split": "test"}).x
    clean_calls = []
    evaluate = ClassificationTask.evaluate

    def counting(self, model, x, y):
        if isinstance(x, torch.Tensor) and x.shape == clean_x.shape and torch.equal(x, clean_x):
            clean_calls.append(1)
        return evaluate(self, model, x, y)

    monkeypatch.setattr(ClassificationTask, "evaluate", counting)
    suite = small_suite(
        name="shared-clean", shard_size=360, noise_levels=(), fgsm_eps=(0.05, 0.1, 0.2), pgd_eps=()
    )
    runs = []
    for i, shared in enumerate((True, True, False)):
        clean_calls.clear()
        monkeypatch.setattr(ClassificationTask, "takes_clean", shared)
        st = Store(tmp_path / f"shared-{i}.db")
        rid = run_suite(suite, st, resume=False, progress=False)
        runs.append((canonical_records(st.records(rid, expand=False)), len(clean_calls)))
    # the clean unit's evaluation, reused by the 3 FGSM units; again in the second run
    assert [calls for _, calls in runs] == [1, 1, 4]
    for records, _ in runs[1:]:
        pd.testing.assert_frame_equal(records, runs[0][0])
    assert len(runs[0][0]) == 4 * 360
