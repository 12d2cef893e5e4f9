"""Example grids (issue 21): regenerated inputs are the scored ones, diffs agree with difflib.

Real runs on scikit-learn digits (MLP; gaussian noise, FGSM, PGD), BBC News (TF-IDF; typos and a
TextFooler attack) and HumanEval (a generator that writes a hash of the prompt it was given, so the
stored prediction names the exact prompt). The regenerated examples are checked against the
records (same prediction, same Lp distance / edit rate, same prompt hash) and against the same
perturbation run on the whole dataset in one batch; word and code diffs against ``difflib.ndiff``
and ``difflib.unified_diff``; the magnified difference image against numpy.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from robustlab.core.registry import datasets, models, perturbations
from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.models import CallableGenerator
from robustlab.report import examples as ex
from robustlab.report.diffs import code_diff, image_views, word_diff
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = """
name: ex-digits
seed: 3
models: [{name: digits-mlp, label: mlp, params: {hidden: 16, epochs: 5}}]
data: {name: digits, params: {split: test}}
shard_size: 64
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [3]}
  - {kind: attack, name: fgsm, levels: [0.1]}
  - {kind: attack, name: pgd, params: {steps: 5}, levels: [0.1]}
metrics: [accuracy]
"""
TEXT = """
name: ex-text
models: [{name: tfidf-logreg}]
data: {name: bbc-news, params: {split: test, limit: 16, max_words: 30}}
shard_size: 5
probes:
  - {kind: perturbation, name: typo, levels: [0.3]}
metrics: [accuracy]
"""
TEXT_ATTACK = """
  - kind: attack
    name: textfooler
    levels: [0.2]
    params: {max_queries: 40, min_similarity: 0.0, constraints: false}
"""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@models.register("test-prompt-hash")
def _hasher() -> CallableGenerator:
    """A generator whose completion names the prompt it was given (by hash)."""
    return CallableGenerator(lambda ps, **kw: [f"    return 0  # {_sha(p)}\n" for p in ps])


def _run(tmp: Path, text: str) -> tuple[Store, str]:
    st = Store(tmp / "runs.db")
    return st, run_suite(Suite.from_yaml(text), st, progress=False)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str]:
    return _run(tmp_path_factory.mktemp("digits"), DIGITS)


def _worst(df: pd.DataFrame, k: int) -> pd.DataFrame:
    return pd.concat([ex.pick(g, k) for _, g in df.groupby(["probe", "level"], sort=False)])


def test_digits_regenerated_inputs_are_the_scored_ones(digits_run: tuple[Store, str]) -> None:
    st, run = digits_run
    df, info = st.records(run), st.run_info(run)
    rows = _worst(df, 5)
    shown, notes = ex.regenerate(info, rows)
    assert notes == [] and len(shown) == len(rows) == 20
    # the prediction on each regenerated input is the stored one
    assert all(x.reproduced for x in shown), [(x.probe, x.pred, x.new_pred) for x in shown]
    stored = rows.set_index(["probe", "example_id"])
    for x in shown:
        r = stored.loc[(x.probe, x.example_id)]
        if x.kind == "attack":  # the very input: its L-inf distance is the recorded one
            d = (x.perturbed - x.clean).abs().max().item()
            assert d == pytest.approx(r["x.distance"], abs=1e-6)
    # worst first: wrong before right, then the lowest stored margin
    for _, g in rows.groupby("probe"):
        assert g["correct"].is_monotonic_increasing
        wrong = g[g["correct"] == 0]
        assert wrong["x.margin"].dropna().is_monotonic_increasing
    # the same noise on the whole test split in one batch (the run used 64-example shards)
    data = datasets.create("digits", {"split": "test"})
    rng = ExampleRNG.from_seed(seed_from(3, "mlp", 0, "gaussian_noise", 3.0), data.ids)
    full = perturbations.create("gaussian_noise")(data.x, 3.0, rng)
    pos = {int(i): j for j, i in enumerate(data.ids.tolist())}
    noisy = [x for x in shown if x.probe == "gaussian_noise"]
    got = torch.stack([x.perturbed for x in noisy])
    assert torch.equal(got, full[[pos[x.example_id] for x in noisy]])


def _png(uri: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_image_views_against_numpy() -> None:
    data = datasets.create("digits", {"split": "test"})
    clean = data.x[7]
    noisy = (clean + 0.05 * torch.linspace(-1, 1, 64).view(1, 8, 8)).clamp(0, 1)
    v = image_views(clean, noisy)
    s = 9  # 72 px / 8
    up = np.kron(clean[0].numpy(), np.ones((s, s)))
    assert np.array_equal(_png(v["clean_png"]), np.round(up * 255).astype(np.uint8))
    d = np.abs(noisy[0].numpy().astype(np.float64) - clean[0].numpy())
    assert v["gain"] == pytest.approx(1 / d.max(), rel=1e-5)
    ref = np.round(np.kron(d / d.max(), np.ones((s, s))) * 255)
    assert np.abs(_png(v["diff_png"]).astype(int) - ref).max() <= 1  # float32 vs float64
    assert _png(v["diff_png"]).max() == 255
    same = image_views(clean, clean.clone())
    assert same["gain"] == 0 and _png(same["diff_png"]).max() == 0


def _strip(html: str, drop: str) -> list[str]:
    """The words of a diff's side: ``drop`` (``ins``/``del``) spans removed, tags removed."""
    import html as h

    kept = re.sub(rf"<{drop}>.*?</{drop}>", " ", html, flags=re.S)
    return h.unescape(re.sub(r"<[^>]+>", " ", kept)).split()


def test_word_diff_against_difflib() -> None:
    data = datasets.create("bbc-news", {"split": "test", "limit": 12, "max_words": 60})
    rng = ExampleRNG.from_seed(0, data.ids)
    for name, lvl in (("typo", 0.3), ("misspelling", 0.3), ("word_deletion", 0.3)):
        out = perturbations.create(name)(data.x, lvl, rng)
        for a, b in zip(data.x, out, strict=True):
            html = word_diff(a, b)
            assert _strip(html, "ins") == a.split() and _strip(html, "del") == b.split()
            nd = list(difflib.ndiff(a.split(), b.split()))
            dels = [w for s in re.findall(r"<del>(.*?)</del>", html) for w in s.split()]
            ins = [w for s in re.findall(r"<ins>(.*?)</ins>", html) for w in s.split()]
            import html as h

            assert [h.unescape(w) for w in dels] == [s[2:] for s in nd if s.startswith("- ")]
            assert [h.unescape(w) for w in ins] == [s[2:] for s in nd if s.startswith("+ ")]
    assert word_diff("a <b> c", "a <b> d") == "a &lt;b&gt; <del>c</del> <ins>d</ins>"
    a = " ".join(f"w{i}" for i in range(20))
    b = a.replace("w10", "X")
    assert word_diff(a, b, context=2) == "… w8 w9 <del>w10</del> <ins>X</ins> w11 w12 …"
    assert word_diff(a, a, context=2) == "w0 w1 w2 w3 …"
    assert word_diff(a, b, context=10) == word_diff(a, b)  # runs of 10 words: nothing to cut


def test_code_diff_against_unified_diff() -> None:
    import html as h

    data = datasets.create("humaneval", {"limit": 6})
    rng = ExampleRNG.from_seed(0, data.ids)
    n_changed = 0
    for name in ("code_var_rename", "format_newline_insertion", "code_dead_code"):
        out = perturbations.create(name)(data.x, 1, rng)
        for a, b in zip(data.x, out, strict=True):
            pa, pb = a["prompt"], b["prompt"]
            html = code_diff(pa, pb)
            lines = h.unescape(re.sub(r"<[^>]+>", "", html)).split("\n")
            ref = [s.rstrip("\n") for s in difflib.unified_diff(
                pa.splitlines(), pb.splitlines(), n=10**6, lineterm="")][3:]  # fmt: skip
            mine = [("+" if s[0] == "+" else "-" if s[0] == "-" else " ") + s[2:] for s in lines]
            assert mine == (ref if pa != pb else [" " + s for s in pa.splitlines()])
            assert [s[1:] for s in mine if s[0] != "+"] == pa.splitlines()
            assert [s[1:] for s in mine if s[0] != "-"] == pb.splitlines()
            n_changed += pa != pb
            # a renamed identifier is marked as a token, not as the whole line
            if name == "code_var_rename" and pa != pb:
                assert re.search(r"- [^\n]*\S[^\n]*<del>\w+</del>", html)
    assert n_changed >= 6


def _text_run(tmp_path: Path, suite: str, n: int) -> list[ex.Example]:
    from robustlab.attacks.text import word_edit_rate

    st, run = _run(tmp_path, suite)
    df, info = st.records(run), st.run_info(run)
    rows = _worst(df[df["kind"] != "clean"], 4)
    shown, notes = ex.regenerate(info, rows)
    assert notes == [] and len(shown) == n and all(x.reproduced for x in shown)
    stored = rows.set_index(["probe", "example_id"])
    for x in shown:
        r = stored.loc[(x.probe, x.example_id)]
        if x.kind == "attack":  # the very text: its edit rate is the recorded one
            rate = word_edit_rate([x.clean], [x.perturbed]).item()
            assert rate == pytest.approx(r["x.edit_rate"])
        full = word_diff(x.clean, x.perturbed)
        assert _strip(full, "ins") == x.clean.split()
        assert _strip(full, "del") == x.perturbed.split()
        # the view keeps every change (long unchanged runs shortened to …)
        v = ex.view(x)
        assert re.findall(r"<(?:del|ins)>.*?</", v["diff"]) == re.findall(
            r"<(?:del|ins)>.*?</", full
        )
    return shown


def test_text_run_regenerated(tmp_path: Path) -> None:
    shown = _text_run(tmp_path, TEXT, 4)
    assert all("<del>" in ex.view(x)["diff"] for x in shown)  # typos at rate 0.3 of 30 words


@pytest.mark.slow
def test_text_attack_regenerated(tmp_path: Path) -> None:
    """TextFooler (constraints off: they load spaCy and the MiniLM encoder; WordNet still loads)."""
    shown = _text_run(tmp_path, TEXT.replace("metrics:", TEXT_ATTACK.lstrip("\n") + "metrics:"), 8)
    assert any(x.kind == "attack" and x.perturbed != x.clean for x in shown)


def test_code_run_regenerated_prompts(tmp_path: Path) -> None:
    suite = """
name: ex-code
model: {name: test-prompt-hash}
task: {name: code-generation, params: {timeout: 5.0}}
data: {name: humaneval, params: {limit: 4, partial: true}}
probes:
  - {kind: perturbation, name: code_var_rename, levels: [1]}
metrics: [pass_at_1]
"""
    st, run = _run(tmp_path, suite)
    df, info = st.records(run), st.run_info(run)
    rows = _worst(df[df["kind"] == "perturbation"], 4)
    shown, notes = ex.regenerate(info, rows)
    assert notes == [] and len(shown) == 4
    for x, pred in zip(shown, rows["pred"], strict=True):
        assert x.new_pred is None and x.style == "code"  # generators are not called again
        assert _sha(x.perturbed["prompt"]) in str(pred)  # the prompt the model was given
        assert 'class="codediff"' in ex.view(x)["diff"]
    assert sum(x.perturbed["prompt"] != x.clean["prompt"] for x in shown) >= 3
    # an attack on a generator would call the model (maybe remote, paid): a note, not a call
    info["suite"]["probes"][0]["kind"] = "attack"
    shown, notes = ex.regenerate(info, rows)
    assert shown == [] and len(notes) == 1 and "not regenerated" in notes[0]


def test_report_section_and_unavailable_model(digits_run: tuple[Store, str]) -> None:
    from robustlab.core.registry import report_sections
    from robustlab.report.sections.examples import ExamplesSection

    assert report_sections.get("examples") is ExamplesSection
    st, run = digits_run
    df, info = st.records(run), st.run_info(run)
    sec = ExamplesSection().build(df, info)
    assert sec is not None and sec["notes"] == []
    assert [g["probe"] for g in sec["groups"]] == ["gaussian_noise", "fgsm", "pgd"]  # suite order
    assert all(len(g["examples"]) == ex.DEFAULT_K for g in sec["groups"])
    for g in sec["groups"]:  # each at its worst level, accuracy from the records
        sel = df[(df["probe"] == g["probe"]) & (df["level"] == g["level"])]
        assert g["accuracy"] == pytest.approx(sel["correct"].mean())
    json.dumps(sec, allow_nan=False)
    # clean vs corrupted vs adversarial: examples right on clean data that the most probes break
    (ov,) = sec["overview"]
    assert [c["probe"] for c in ov["columns"]] == ["gaussian_noise", "fgsm", "pgd"]
    clean = df[df["kind"] == "clean"].set_index("example_id")["correct"]
    at = {c["probe"]: c["level"] for c in ov["columns"]}
    broken = []
    for r in ov["rows"]:
        assert clean[r["example_id"]] == 1
        for probe, cell in r["cells"].items():
            rec = df[(df["probe"] == probe) & (df["level"] == at[probe])]
            assert cell["correct"] == rec.set_index("example_id").loc[r["example_id"], "correct"]
        broken.append(sum(c["correct"] == 0 for c in r["cells"].values()))
    assert len(ov["rows"]) == 4 and broken == sorted(broken, reverse=True) and broken[0] >= 2
    html = ExamplesSection().render(sec)
    assert html.count('class="ex perturbed"') == 3 * ex.DEFAULT_K + 3 * 4
    assert html.count('class="ex diff"') == 3 * ex.DEFAULT_K
    assert html.count("reproduced") == 3 * ex.DEFAULT_K
    assert 'src="http' not in html  # inline images only
    # a model that cannot be rebuilt here: a note per group, no failure
    info["suite"]["models"][0]["name"] = "no-such-model"
    data: Any = ExamplesSection().build(df, info)
    assert data is not None and len(data["notes"]) == 3
    assert all("not rebuilt" in n and "no-such-model" in n for n in data["notes"])
    assert "no-such-model" in ExamplesSection().render(data)
