"""TInt (seed S16): the traced-integer generator with static / dynamic chain-of-thought noise, the
final-integer answer parsing, the ``tint`` diagnosis through the runner with the local SmolLM2
(and the HTTP endpoint), and the report section.

References: every trace step is re-checked on the *rendered text* by evaluating its left-hand side
with Python (``max(3,1)``, ``(4+2*2)%10``, ``5-3``), answers against plain-Python definitions of
the functions, report numbers against a direct recomputation from the records (Clopper-Pearson
via ``scipy.stats.binomtest``, paired differences by hand).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import datasets, diagnoses, tasks
from robustlab.data import tint as T
from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite
from robustlab.tasks.generation import final_integer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FUNCS = list(T.FUNCTIONS)
M = 7  # a modulus other than the default, so the text shows it is used


def reference(name: str, xs: list[int], m: int = M) -> int:
    """The functions' plain definitions (not folds): what each clean trace must end in."""
    return {
        "sum": lambda: sum(xs),
        "max": lambda: max([0, *xs]),
        "count_even": lambda: sum(1 for x in xs if x % 2 == 0),
        "alt_sum": lambda: sum(x if i % 2 == 0 else -x for i, x in enumerate(xs)),
        "sum_mod": lambda: sum(xs) % m,
        "sum_sq_mod": lambda: sum(x * x for x in xs) % m,
    }[name]()


LINE = re.compile(r"^(\w+) \[([\d, ]*)\]: (.*); answer (-?\d+)$")
STEP = re.compile(r"^(.*)=(-?\d+)$")
FIRST = re.compile(r"^(?:\(|max\()?(-?\d+)")


def parse(prompt: str) -> tuple[list[dict], str]:
    """Demonstration lines of a rendered prompt -> list, steps (lhs value, shown state before,
    shown result) and answer; plus the query line."""
    *demos, query = prompt.split("\n")
    out = []
    for line in demos:
        m = LINE.match(line)
        assert m, line
        steps = []
        for s in m.group(3).split(", "):
            sm = STEP.match(s)
            assert sm, s
            lhs = sm.group(1)
            steps.append(
                {"value": eval(lhs, {"max": max}),  # noqa: S307 - our own arithmetic text
                 "before": int(FIRST.match(lhs).group(1)), "shown": int(sm.group(2))}
            )  # fmt: skip
        xs = [int(v) for v in m.group(2).split(", ")]
        out.append({"fn": m.group(1), "xs": xs, "steps": steps, "answer": int(m.group(4))})
    return out, query


def gen(noise: str = "none", c: float = 0.0, **kw):
    args = {"shots": 4, "length": 4, "modulus": M, "intensity": 3, "seed": 5} | kw
    return T.generate(24, FUNCS, noise=noise, contamination=c, **args)


# generator: exactness ---------------------------------------------------------------------------
def test_clean_traces_recompute_each_function():
    t = gen()
    prompts = T.render(t)
    for i, p in enumerate(prompts):
        demos, query = parse(p)
        assert len(demos) == 4 and query == f"{t.functions[i]} [{', '.join(map(str, t.xs[i, 4]))}]:"
        for d in demos:
            assert d["fn"] == t.functions[i]
            assert d["answer"] == reference(d["fn"], d["xs"])  # the definition, not the fold
            assert [s["shown"] for s in d["steps"]] == [
                reference(d["fn"], d["xs"][: k + 1]) for k in range(len(d["xs"]))
            ]  # each step is the function of the prefix
            assert all(s["value"] == s["shown"] for s in d["steps"])  # the text's arithmetic
            if d["fn"] == "count_even":  # the shown increment is the value's evenness
                incs = [int(s["value"] - s["before"]) for s in d["steps"]]
                assert incs == [int(x % 2 == 0) for x in d["xs"]]
    data = datasets.create("tint", {"n": 24, "functions": FUNCS, "shots": 4, "length": 4,
                                    "modulus": M, "intensity": 3, "seed": 5})  # fmt: skip
    assert data.x == prompts and data.name == "tint"
    assert data.y == [str(reference(f, t.xs[i, 4].tolist())) for i, f in enumerate(t.functions)]
    assert set(FUNCS) == set(data.meta["function"])
    assert data.meta["noised_steps"] == [0] * 24 and data.meta["noise"] == ["none"] * 24


@pytest.mark.parametrize("c", [0.25, 0.5, 1.0])
def test_static_noise_changes_exactly_the_chosen_steps(c):
    clean, t = gen(), gen("static", c)
    k = T._count(c, 4 * 4)
    assert (t.mask.sum(axis=(1, 2)) == k).all() and not t.mask[:, 4].any()  # query never noised
    for i, (pc, pn) in enumerate(zip(T.render(clean), T.render(t), strict=True)):
        dc, qc = parse(pc)
        dn, qn = parse(pn)
        assert qc == qn
        for r, (a, b) in enumerate(zip(dc, dn, strict=True)):
            assert a["answer"] == b["answer"] == reference(a["fn"], a["xs"])  # answer stays clean
            for s, (sa, sb) in enumerate(zip(a["steps"], b["steps"], strict=True)):
                assert sb["before"] == sa["before"] and sb["value"] == sa["value"]  # later steps
                # use the clean state; only the chosen step's shown result moves, by +-intensity
                if t.mask[i, r, s]:
                    assert abs(sb["shown"] - sa["shown"]) == 3
                else:
                    assert sb["shown"] == sa["shown"]
    assert np.array_equal(t.after - clean.after, t.mask * t.delta)


@pytest.mark.parametrize("c", [0.25, 0.5, 1.0])
def test_dynamic_noise_propagates_consistently(c):
    clean, t, static = gen(), gen("dynamic", c), gen("static", c)
    assert np.array_equal(t.mask, static.mask) and np.array_equal(t.delta, static.delta)
    changed = 0
    for i, (pc, pn) in enumerate(zip(T.render(clean), T.render(t), strict=True)):
        dc, _ = parse(pc)
        dn, _ = parse(pn)
        for r, (a, b) in enumerate(zip(dc, dn, strict=True)):
            prev = 0
            for s, step in enumerate(b["steps"]):
                assert step["before"] == prev  # each step starts from the shown (noised) state
                err = step["shown"] - step["value"]  # the text's arithmetic, re-evaluated
                assert err == (t.delta[i, r, s] if t.mask[i, r, s] else 0)
                assert abs(err) in ((3,) if t.mask[i, r, s] else (0,))
                prev = step["shown"]
            assert b["answer"] == b["steps"][-1]["shown"]  # the answer is the propagated state
            if not t.mask[i, r].any():
                assert b == a
            changed += b["answer"] != a["answer"]
    assert changed > 0  # some errors reach the answer (the max/mod functions can absorb them)
    data = datasets.create("tint", {"n": 24, "functions": FUNCS, "shots": 4, "length": 4,
                                    "modulus": M, "intensity": 3, "seed": 5, "noise": "dynamic",
                                    "contamination": c})  # fmt: skip
    wrong = (t.answer[:, :4] != clean.answer[:, :4]).sum(axis=1)
    assert data.meta["wrong_answers"] == wrong.tolist()
    assert data.y == [str(a) for a in clean.answer[:, 4]]  # the query's answer is clean


def test_noise_positions_are_nested_and_deterministic():
    masks = [gen("static", c).mask for c in (0.0, 0.25, 0.5, 0.75, 1.0)]
    for lo, hi in zip(masks, masks[1:], strict=False):
        assert (hi >= lo).all() and hi.sum() > lo.sum()  # higher levels noise a superset
    assert masks[-1][:, :4].all()
    a, b = gen("dynamic", 0.5), gen("dynamic", 0.5)
    assert T.render(a) == T.render(b)
    big = T.generate(40, FUNCS, noise="dynamic", contamination=0.5, shots=4, length=4, modulus=M,
                     intensity=3, seed=5)  # fmt: skip
    assert T.render(big)[:24] == T.render(a)  # example i does not depend on n
    assert T.render(gen("dynamic", 0.5, seed=6)) != T.render(a)


def test_shot_unit_noises_whole_demonstrations():
    t = gen("static", 0.5, unit="shot")
    per_demo = t.mask[:, :4].sum(axis=2)
    assert ((per_demo == 1).sum(axis=1) == 2).all() and (per_demo <= 1).all()


def test_zero_shot_and_single_function():
    d = datasets.create("tint", {"n": 3, "functions": "max", "shots": 0, "noise": "static",
                                 "contamination": 1.0})  # fmt: skip
    assert all(p.count("\n") == 0 and p.startswith("max [") for p in d.x)
    assert d.meta["noised_steps"] == [0, 0, 0]


# answer parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "want"),
    [(" 0+3=3, 3+1=4; answer 4", 4), ("Answer: -3", -3), ("the answer is 12.", 12),
     (" max(2,2)=2; answer ", None), ("so 5+7=12", 12), ("3-4=-1", -1), ("7-3", 3),
     ("no digits", None), ("answer 7\nsum [1, 2]: 0+1=1; answer 1", 7), ("", None)],
)  # fmt: skip
def test_final_integer(text, want):
    assert final_integer(text) == want


def test_integer_match_scores_against_the_reference():
    task = tasks.create("generation", {"match": "integer", "max_tokens": 8, "stop": ["\n"]})
    assert task._score(" 1+2=3; answer 3", "3") == 1.0
    assert task._score(" 1+2=3; answer 03", "3") == 1.0  # integers, not strings
    assert task._score(" 1+2=3; answer", "3") == 0.0
    assert task._score(" answer -1", "-1") == 1.0 and task._score(" answer 1", "-1") == 0.0


# bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "message"),
    [({"noise": "static", "contamination": 1.5}, "contamination"),
     ({"noise": "static", "contamination": -0.1}, "contamination"),
     ({"functions": ["sum", "median"]}, "unknown function 'median'; known functions: sum, max"),
     ({"functions": []}, "empty"),
     ({"noise": "loud"}, "noise"),
     ({"contamination": 0.5}, "needs noise 'static' or 'dynamic'"),
     ({"low": 5, "high": 2}, "low"),
     ({"intensity": 0}, "intensity")],
)  # fmt: skip
def test_bad_dataset_params_are_one_line_errors(params, message):
    from robustlab.core.registry import check_params

    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        check_params(datasets.get("tint"), params, "dataset 'tint'")
        T.generate(2, **{"functions": ["sum"]} | params)
    assert "\n" not in str(err.value)


def _suite(levels=(1.0,), data=None, model=None, **probe):
    data = data or {"n": 2, "functions": ["max", "sum"], "length": 2, "high": 5, "shots": 2,
                    "intensity": 2}  # fmt: skip
    return Suite(
        name="tint-test",
        models=[model or ModelSpec(name="smollm2-135m")],
        data=ComponentSpec(name="tint", params=data) if isinstance(data, dict) else data,
        task=ComponentSpec(name="generation",
                           params={"match": "integer", "max_tokens": 24, "stop": ["\n"]}),
        probes=[ProbeSpec(kind="diagnosis", name="tint", label=f"tint-{n}", levels=list(levels),
                          params={"noise": n, **probe}) for n in ("static", "dynamic")],
    )  # fmt: skip


def test_bad_suites_are_refused_before_running():
    from robustlab.runner.validation import validate_suite

    with pytest.raises(ConfigError, match=r"level 1 \(1.5\).*contamination must be .*\[0, 1\]"):
        _suite(levels=(0.5, 1.5)).validate_components()
    with pytest.raises(ConfigError, match="unknown function 'median'"):
        validate_suite(_suite(data={"functions": ["median"]}))
    with pytest.raises(ConfigError, match="diagnosis 'tint' needs the tint dataset.*got 'digits"):
        validate_suite(_suite(data=ComponentSpec(name="digits")))
    with pytest.raises(ConfigError, match="noise"):
        _suite(noise="loud").validate_components()
    with pytest.raises(CapabilityError, match="needs a text generator.*smollm2-135m"):
        diagnoses.create("tint", {}).check_model(object())


def test_diagnosis_loads_the_suite_data_with_its_noise():
    """At level c the diagnosis scores the suite's examples with its own noise type, intensity and
    unit at contamination c: exactly the prompts the dataset gives for those parameters."""
    from robustlab.diagnose.base import DiagnosisEnv
    from robustlab.runner.context import process_context
    from robustlab.runner.plan import data_key, plan

    base = {"n": 5, "functions": ["sum", "alt_sum"], "shots": 3, "intensity": 1}
    suite = _suite(levels=(0.5,), data=base, intensity=4, unit="shot")
    units = [u for u in plan(suite, {data_key(suite.data): 1}) if u.probe is not None]
    assert [(u.probe_label, u.level) for u in units] == [
        ("tint-static", 0.5),
        ("tint-dynamic", 0.5),
    ]
    for u in units:
        env = DiagnosisEnv(u, process_context(), None)  # type: ignore[arg-type]
        got = diagnoses.create("tint", dict(u.probe.params)).noised(env, 0.5)
        want = datasets.create("tint", base | {"noise": u.probe.params["noise"],
                                               "contamination": 0.5, "intensity": 4,
                                               "unit": "shot"})  # fmt: skip
        assert got.x == want.x and got.meta == want.meta and got.y == want.y
        assert set(got.meta["intensity"]) == {4} and set(got.meta["noised_steps"]) == {2}


def test_section_is_absent_without_tint_probes():
    from robustlab.report.sections.tint import TInt

    df = pd.DataFrame({"kind": ["clean"], "probe": ["clean"], "model": ["m"], "level": [0.0],
                       "correct": [1.0]})  # fmt: skip
    assert TInt().build(df, {"suite": {"probes": []}}) is None
    info = {"suite": {"probes": [{"kind": "diagnosis", "name": "tint", "label": "t"}]}}
    assert TInt().build(df, info) is None  # a tint probe, but no records of it


# end to end: suite -> store -> report, with the local SmolLM2 ---------------------------------------
def _run(suite: Suite, tmp_path: Path):
    from robustlab.runner import run_suite
    from robustlab.store import Store

    store = Store(tmp_path / "runs.db")
    rid = run_suite(suite, store, progress=False)
    return store, rid


def _check_run(store, rid, suite: Suite, tmp_path: Path) -> dict:
    from scipy.stats import binomtest

    from robustlab.report.build import build_report, write_report

    df = store.records(rid)
    data = datasets.create("tint", suite.data.params)
    n, levels = len(data), suite.probes[0].levels
    diag = df[df["kind"] == "diagnosis"]
    clean = df[df["kind"] == "clean"].set_index("example_id")
    assert len(clean) == n and len(diag) == 2 * n * len(levels)
    assert diag["error"].isna().all() and clean["error"].isna().all()
    for (probe, level), g in diag.groupby(["probe", "level"]):
        noise = probe.removeprefix("tint-")
        want = datasets.create("tint", suite.data.params | {"noise": noise, "contamination": level})
        g = g.set_index("example_id").sort_index()
        assert (g["m.noise"] == noise).all() and (g["m.contamination"] == level).all()
        assert g["m.noised_steps"].tolist() == want.meta["noised_steps"]
        assert [json.loads(v) for v in g["label"]] == want.y == data.y  # clean at every level
        preds = [json.loads(v) for v in g["pred"]]
        answers = [None if pd.isna(v) else int(v) for v in g["x.answer"]]
        assert answers == [final_integer(p) for p in preds]
        ok = [float(final_integer(p) == int(y)) for p, y in zip(preds, want.y, strict=True)]
        assert g["correct"].tolist() == ok
        if level == 0:  # the clean prompt: the suite's clean evaluation, same completions
            assert preds == [json.loads(v) for v in clean.loc[g.index, "pred"]]
    report = build_report(store, rid)
    sec = report["extensions"]["tint"]["data"]
    for r in sec["rows"]:
        g = diag[(diag["probe"] == r["probe"]) & (diag["level"] == r["level"])]
        k = int(g["correct"].sum())
        ci = binomtest(k, len(g)).proportion_ci(0.95, method="exact")
        assert r["n"] == len(g) and r["accuracy"] == pytest.approx(k / len(g))
        assert (r["accuracy_lo"], r["accuracy_hi"]) == pytest.approx((ci.low, ci.high))
    for p in sec["paired"]:
        g = diag[diag["level"] == p["level"]].pivot(index="example_id", columns="probe",
                                                    values="correct")  # fmt: skip
        assert p["diff"] == pytest.approx((g[p["dynamic"]] - g[p["static"]]).mean())
        assert p["lo"] <= p["diff"] <= p["hi"] and p["n"] == n
    assert sec["clean"]["smollm2-135m"] == pytest.approx(clean["correct"].mean())
    html, _ = write_report(store, rid, tmp_path / "report")
    text = html.read_text()
    assert "Noisy chains of thought (TInt)" in text and "accuracy vs contamination" in text
    assert text.count("<svg") >= 1 + bool(sec["functions"]) and "tint-dynamic" in text
    return sec


def test_suite_with_smollm2_to_store_and_report(tmp_path):
    """1 prompt x (clean + static@1 + dynamic@1): 3 generations (cached on disk afterwards);
    the slow test runs more prompts and functions."""
    data = {"n": 1, "functions": ["max"], "length": 2, "high": 5, "shots": 2, "intensity": 2}
    suite = _suite(data=data)
    store, rid = _run(suite, tmp_path)
    sec = _check_run(store, rid, suite, tmp_path)
    assert {r["probe"] for r in sec["rows"]} == {"tint-static", "tint-dynamic"}
    assert {(p["static"], p["dynamic"]) for p in sec["paired"]} == {("tint-static", "tint-dynamic")}
    assert sec["functions"] == []  # one function: no per-function curves


@pytest.mark.slow
def test_sweep_with_smollm2_and_the_same_answers_over_http(tmp_path):
    """A small sweep (3 prompts, 3 functions, levels 0 / 1, both noise types) in-process, then
    the same suite against llama.cpp's OpenAI-compatible HTTP server: identical records, except
    one prompt the server refuses (HTTP 400): an error record, nothing else lost."""
    from llm_server import Fault, LLMServer
    from robustlab.report.build import build_report
    from robustlab.store.cache import use_store

    data = {"n": 3, "functions": ["max", "sum", "count_even"], "length": 2, "high": 5,
            "shots": 3, "intensity": 2}  # fmt: skip
    local = _suite(levels=(0, 1), data=data)
    store, rid = _run(local, tmp_path)
    sec = _check_run(store, rid, local, tmp_path)
    assert len(sec["functions"]) == 3 * 2 * 2
    # a demonstration line only the dynamic prompt of example 0 at level 1 holds
    dyn = datasets.create("tint", data | {"noise": "dynamic", "contamination": 1.0}).x
    others = datasets.create("tint", data | {"noise": "static", "contamination": 1.0}).x
    line = next(ln for ln in dyn[0].split("\n")[:-1] if ln not in "\n".join([*others, *dyn[1:]]))
    with LLMServer(n_parallel=1) as srv:
        srv.faults.append(Fault("400", times=100, match=line))
        params = {"base_url": srv.url, "model": "smollm2", "chat": False, "timeout": 120.0}
        http = _suite(
            levels=(0, 1),
            data=data,
            model=ModelSpec(name="http-generator", label="smollm2-135m", params=params),
        )
        (tmp_path / "http").mkdir()
        with use_store(str(tmp_path / "http" / "runs.db")):
            store2, rid2 = _run(http, tmp_path / "http")
        # clean + 2 types at level 1 less the refused prompt; level 0 is the clean prompt,
        # answered by the cache
        assert srv.forwarded == 3 * 3 - 1
    a, b = store.records(rid), store2.records(rid2)
    refused = (b["probe"] == "tint-dynamic") & (b["level"] == 1.0) & (b["example_id"] == 0)
    assert refused.sum() == 1 and b.loc[refused, "correct"].isna().all()
    assert "400" in b.loc[refused, "error"].iloc[0] and b.loc[~refused, "error"].isna().all()
    cols = ["probe", "level", "example_id", "pred", "correct"]
    key = ["probe", "level", "example_id"]
    keep = ~((a["probe"] == "tint-dynamic") & (a["level"] == 1.0) & (a["example_id"] == 0))
    assert (
        a.loc[keep, cols]
        .sort_values(key)
        .reset_index(drop=True)
        .equals(b.loc[~refused, cols].sort_values(key).reset_index(drop=True))
    )
    row = next(
        r
        for r in build_report(store2, rid2)["extensions"]["tint"]["data"]["rows"]
        if r["probe"] == "tint-dynamic" and r["level"] == 1.0
    )
    assert row["errors"] == 1 and row["n"] == 2  # the error is counted, not scored
