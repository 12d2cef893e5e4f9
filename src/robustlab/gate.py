"""CI regression gates: fail a build when a candidate run is significantly less robust.

A gate compares a candidate run with a baseline run of the same suite row by row -- every
(model, probe, level) and metric -- with :func:`robustlab.metrics.compare` (one comparison in the
package): a paired bootstrap CI and a sign-flip permutation p-value on the per-example differences
where both runs hold the same examples (an unpaired relabelling test otherwise), and
Benjamini-Hochberg (1995) false-discovery control over all rows of the comparison. A row is a
**regression** when it is significant (BH-adjusted ``q <= alpha``) *and* its drop (``A - B`` for
higher-is-better metrics, ``B - A`` otherwise) exceeds the practical threshold ``max_drop``:
statistical and practical significance both, as recommended for model monitoring gates in MLOps
(S44). A row the candidate did not measure (its units failed) fails too.

Example::

    from robustlab.gate import gate, parse_max_drop
    res = gate(store.records(base), store.records(cand), max_drop=parse_max_drop("2pp"))
    if not res.passed:
        print(res.markdown())             # GitHub step summary
        res.write_junit("gate.xml")      # one testcase per row, <failure> for each regression

``robustlab gate --baseline RUN --candidate RUN`` (exit 1 on a regression, 2 on bad input) and
:func:`robustlab.testing.gate.assert_robust` (pytest) are built on it; see ``docs/gate.md``.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from robustlab.core.errors import ConfigError

_DROP = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(pp|%)?\s*$")


def parse_max_drop(value: str | float) -> float:
    """The practical threshold as a fraction: ``"2pp"``, ``"2%"`` and ``0.02`` all give 0.02.

    A bare number is a fraction and must be below 1 (``"2"`` is refused as ambiguous: write
    ``2pp``). Raises :class:`ConfigError` on anything else.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        v, unit = float(value), None
    else:
        m = _DROP.match(str(value))
        if not m:
            raise ConfigError(
                f"--max-drop {value!r} is not a drop: give percentage points (2pp) or a fraction "
                "(0.02)"
            )
        v, unit = float(m.group(1)), m.group(2)
    if unit:
        v /= 100.0
    if not math.isfinite(v) or v < 0 or v >= 1:
        raise ConfigError(
            f"--max-drop {value!r} is out of range: give 0 <= drop < 1 as a fraction (0.02) or "
            "percentage points below 100 (2pp)"
        )
    return v


def _spec_str(spec: dict[str, Any] | None) -> str:
    if not spec:
        return "none"
    params = spec.get("params") or {}
    inner = ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(params.items()))
    return f"{spec.get('name')}({inner})"


def suite_differences(baseline: dict[str, Any], candidate: dict[str, Any]) -> list[str]:
    """What makes two stored suites (``Store.run_info(run)["suite"]``) unfit for a gate: different
    data, probes (or probe parameters), levels, or models (several models per run that are not the
    same; one model each is a version comparison and is fine). Empty when they fit."""
    diffs = []
    if _spec_str(baseline.get("data")) != _spec_str(candidate.get("data")):
        diffs.append(
            f"data: {_spec_str(baseline.get('data'))} vs {_spec_str(candidate.get('data'))}"
        )

    def probes(s: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(p["kind"], p["name"]): p for p in s.get("probes") or []}

    pa, pb = probes(baseline), probes(candidate)
    only_a = sorted(f"{k}/{n}" for k, n in pa.keys() - pb.keys())
    only_b = sorted(f"{k}/{n}" for k, n in pb.keys() - pa.keys())
    if only_a or only_b:
        diffs.append(
            "probes: baseline only "
            + (", ".join(only_a) or "none")
            + "; candidate only "
            + (", ".join(only_b) or "none")
        )
    for key in sorted(pa.keys() & pb.keys()):
        a, b = pa[key], pb[key]
        name = f"{key[0]}/{key[1]}"
        if json.dumps(a.get("params") or {}, sort_keys=True) != json.dumps(
            b.get("params") or {}, sort_keys=True
        ):
            diffs.append(f"probe {name} parameters: {a.get('params')} vs {b.get('params')}")
        la, lb = sorted(a.get("levels") or []), sorted(b.get("levels") or [])
        if la != lb:
            diffs.append(f"probe {name} levels: {la} vs {lb}")
    ma = sorted(m.get("label") or m["name"] for m in baseline.get("models") or [])
    mb = sorted(m.get("label") or m["name"] for m in candidate.get("models") or [])
    if ma != mb and (len(ma) > 1 or len(mb) > 1):
        diffs.append(f"models: {', '.join(ma)} vs {', '.join(mb)}")
    return diffs


@dataclass
class GateResult:
    """The gate's verdict: ``rows`` is :func:`~robustlab.metrics.compare`'s frame plus ``drop``
    (positive = worse) and ``regression``; ``passed`` is True when no row regressed."""

    rows: pd.DataFrame
    max_drop: float
    alpha: float
    baseline: str = "baseline"
    candidate: str = "candidate"
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> pd.DataFrame:
        return self.rows[self.rows["regression"]]

    @property
    def passed(self) -> bool:
        return not bool(self.rows["regression"].any())

    def _name(self, r: Any) -> str:
        model = f"{r.model} " if "model" in self.rows else ""
        return f"{model}{r.kind}/{r.probe} level={r.level:g} {r.metric}"

    def _verdict(self, r: Any) -> str:
        if r.status == "missing in B":
            return "missing in candidate"
        if r.status == "missing in A":
            return "new in candidate"
        if r.regression:
            return "regression"
        if r.p_value != r.p_value:
            return "n/a"  # the metric does not apply to this probe (no values)
        if r.significant and r.drop > 0:
            return "worse, within max-drop"
        if r.significant and r.drop < 0:
            return "better"
        return "n.s."

    def _detail(self, r: Any) -> str:
        if r.status != "ok":
            return f"{self._name(r)}: {self._verdict(r)}"
        return (
            f"{self._name(r)}: baseline {r.a:.4f}, candidate {r.b:.4f}, drop {r.drop:+.4f} "
            f"(95% CI of B - A [{r.ci_lo:+.4f}, {r.ci_hi:+.4f}]), p = {r.p_value:.3g}, "
            f"BH q = {r.q_value:.3g}; max drop {self.max_drop:g}, alpha {self.alpha:g}"
        )

    def markdown(self) -> str:
        """A GitHub-Actions step summary (GitHub-flavoured Markdown)."""
        n = int(self.rows["regression"].sum())
        head = "PASSED" if self.passed else f"FAILED: {n} regression{'s' * (n != 1)}"
        lines = [
            f"## robustlab gate: {head}",
            "",
            f"Baseline `{self.baseline}`, candidate `{self.candidate}`. A row regresses when its "
            f"drop exceeds {self.max_drop:g} and is significant after Benjamini-Hochberg "
            f"false-discovery control at {self.alpha:g} over {int(self.rows['p_value'].notna().sum())}"
            " rows (permutation test, paired where the runs share examples).",
            "",
        ]
        lines += [f"> {n}" for n in self.notes] + ([""] if self.notes else [])
        per_model = "model" in self.rows
        cols = ["model"] * per_model + ["probe", "level", "metric", "baseline", "candidate",
                                        "drop", "95% CI (B - A)", "q", "verdict"]  # fmt: skip
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

        def num(v: float) -> str:
            return "" if v != v else f"{v:.3f}"

        for r in self.rows.itertuples():
            verdict = self._verdict(r)
            mark = {"regression": ":x: ", "missing in candidate": ":x: "}.get(verdict, "")
            ci = "" if r.ci_lo != r.ci_lo else f"[{r.ci_lo:+.3f}, {r.ci_hi:+.3f}]"
            cells = ([str(r.model)] if per_model else []) + [
                f"{r.kind}/{r.probe}", f"{r.level:g}", r.metric, num(r.a), num(r.b),
                "" if r.drop != r.drop else f"{r.drop:+.3f}", ci,
                "" if r.q_value != r.q_value else f"{r.q_value:.3g}", mark + verdict,
            ]  # fmt: skip
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"

    def junit(self) -> ET.Element:
        """JUnit XML: ``<testsuites><testsuite>`` with one ``<testcase>`` per row and a
        ``<failure>`` for each regression (or row missing in the candidate)."""
        failed = self.rows["regression"]
        skipped = (self.rows["status"] == "ok") & self.rows["p_value"].isna() & ~failed
        root = ET.Element("testsuites", name="robustlab gate", tests=str(len(self.rows)),
                          failures=str(int(failed.sum())), errors="0")  # fmt: skip
        suite = ET.SubElement(root, "testsuite", name=f"robustlab gate {self.candidate} vs "
                              f"{self.baseline}", tests=str(len(self.rows)),
                              failures=str(int(failed.sum())), errors="0",
                              skipped=str(int(skipped.sum())),
                              time="0")  # fmt: skip
        props = ET.SubElement(suite, "properties")
        for k, v in (("baseline", self.baseline), ("candidate", self.candidate),
                     ("max_drop", f"{self.max_drop:g}"), ("alpha", f"{self.alpha:g}")):  # fmt: skip
            ET.SubElement(props, "property", name=k, value=v)
        for r, skip in zip(self.rows.itertuples(), skipped, strict=True):
            model = f"{r.model}." if "model" in self.rows else ""
            case = ET.SubElement(suite, "testcase", classname=f"robustlab.gate.{model}{r.kind}",
                                 name=f"{r.probe}[level={r.level:g}] {r.metric}", time="0")  # fmt: skip
            if r.regression:
                f = ET.SubElement(case, "failure", type=self._verdict(r).replace(" ", "-"),
                                  message=self._detail(r))  # fmt: skip
                f.text = self._detail(r)
            elif skip:
                ET.SubElement(case, "skipped", message=f"{r.metric} has no value for {r.probe}")
            else:
                out = ET.SubElement(case, "system-out")
                out.text = self._detail(r)
        return root

    def write_junit(self, path: str | Path) -> Path:
        """Write :meth:`junit` to ``path`` (UTF-8, with an XML declaration)."""
        tree = ET.ElementTree(self.junit())
        ET.indent(tree)
        p = Path(path)
        tree.write(p, encoding="utf-8", xml_declaration=True)
        return p


def gate(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    metrics: Sequence[str] = ("accuracy",),
    max_drop: float = 0.0,
    alpha: float = 0.05,
    n_boot: int = 1000,
    n_perm: int = 10_000,
    seed: int = 0,
    names: tuple[str, str] = ("baseline", "candidate"),
) -> GateResult:
    """Gate ``candidate``'s records against ``baseline``'s (records of :meth:`Store.records`).

    Every metric must be registered and have per-example values (the test needs them). Diagnosis
    records are left out (their scores are not the gated metrics). See the module docstring.
    """
    from robustlab.core.records import without_diagnoses
    from robustlab.core.registry import metrics as metric_registry
    from robustlab.metrics import compare

    metrics = list(dict.fromkeys(metrics))  # a repeated metric would count twice in the family
    if not metrics:
        raise ConfigError("no metric to gate on: give at least one --metric")
    for name in metrics:
        if metric_registry.get(name).per_example is None:
            raise ConfigError(
                f"metric {name!r} has no per-example values, so no test can tell a regression "
                "from chance: gate on accuracy, error_rate, ..."
            )
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha {alpha!r} must be between 0 and 1")
    a, b = without_diagnoses(baseline), without_diagnoses(candidate)
    for df, name in ((a, names[0]), (b, names[1])):
        if df.empty:
            raise ConfigError(f"{name} run has no records to gate on")
    rows = compare(a, b, list(metrics), n_boot=n_boot, seed=seed, alpha=alpha, n_perm=n_perm)
    sign = rows["higher_is_better"].map({True: -1.0, False: 1.0}).astype(float)
    rows["drop"] = sign * rows["diff"] + 0.0  # no -0.0
    missing = rows["status"] == "missing in B"
    rows["regression"] = (
        (rows["status"] == "ok") & rows["significant"] & (rows["drop"] > max_drop)
    ) | missing
    notes = []
    if (rows["status"] == "ok").any():
        ja = a.set_index(["replicate", "example_id"]).index.unique()
        jb = b.set_index(["replicate", "example_id"]).index.unique()
        if not ja.sort_values().equals(jb.sort_values()):
            notes.append(
                "the runs do not hold the same examples: the tests are unpaired (less power)"
            )
    return GateResult(rows, max_drop, alpha, names[0], names[1], notes)


def gate_runs(
    store: Any,
    baseline: str,
    candidate: str,
    metrics: Sequence[str] = ("accuracy",),
    max_drop: float = 0.0,
    **kwargs: Any,
) -> GateResult:
    """:func:`gate` on two runs of ``store`` (ids, unique prefixes or ``latest``), after checking
    that they ran the same suite (:func:`suite_differences`; a :class:`ConfigError` names what
    differs)."""
    from robustlab.core.registry import metrics as metric_registry

    for name in metrics:  # before reading any records: a typo costs nothing
        metric_registry.get(name)
    a, b = store.resolve(baseline), store.resolve(candidate)
    ia, ib = store.run_info(a), store.run_info(b)
    diffs = suite_differences(ia["suite"] or {}, ib["suite"] or {})
    if diffs:
        raise ConfigError(
            f"runs {a} and {b} ran different suites, so the gate cannot compare them: "
            + "; ".join(diffs)
        )
    res = gate(store.records(a), store.records(b), metrics, max_drop, names=(a, b), **kwargs)
    for run, info in ((a, ia), (b, ib)):
        if info["status"] != "complete":
            res.notes.append(f"run {run} is {info['status']}: rows it lacks count as missing")
    return res
