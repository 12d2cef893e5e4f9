"""HTML for the report's header (run, environment, failures) and its S1 summary section."""

from __future__ import annotations

from typing import Any

from robustlab.report.format import ci, e, kv_table, level, num, pct, pp, table


def header(run: dict[str, Any]) -> str:
    """Run facts, environment, fingerprints, failed units and failing examples."""
    env = run.get("environment") or {}
    pk = env.get("packages") or {}
    status = run.get("status") or "?"
    cls = "ok" if status == "complete" else "bad"
    items = [
        ("run id", f"<code>{e(run['id'])}</code>"),
        ("suite", e(run.get("suite"))),
        ("status", f'<span class="{cls}">{e(status)}</span>'
         + (f" — {e(run['message'])}" if run.get("message") else "")),
        ("seed", e(run.get("seed"))),
        ("units", f"{e(run.get('units_done'))} done of {e(run.get('n_units'))}"),
        ("records", e(run.get("n_records"))),
        ("elapsed", f"{num(run.get('elapsed'), 1)} s (executing units)"),
        ("python / platform", f"{e(env.get('python'))} / {e(env.get('platform'))}"),
        ("hardware", f"{e(env.get('cpu_count'))} CPUs, torch threads {e(env.get('torch_threads'))}"
         f", GPU {e(env.get('cuda') or 'none')}, engine {e(env.get('engine'))}"),
        ("packages", ", ".join(f"{e(k)} {e(v)}" for k, v in pk.items())),
        ("model fingerprints", ", ".join(
            f"{e(k)} <code>{e(v)}</code>" for k, v in (run.get("fingerprints") or {}).items())),
    ]  # fmt: skip
    out = [kv_table(items)]
    if run.get("failed_units"):
        rows = [[e(u["unit"]), f"<code>{e(u['error'])}</code>"] for u in run["failed_units"]]
        out.append(f'<div class="warn"><b>{len(rows)} unit(s) failed</b>'
                   f"{table(['unit', 'error'], rows)}</div>")  # fmt: skip
    n_bad = run.get("n_failing_examples") or 0
    if n_bad:
        rows = [[f"<code>{e(r['error'])}</code>", e(r["count"])] for r in run.get("errors", [])]
        out.append(f'<div class="warn"><b>{n_bad} record(s) failed on the model</b> (counted as '
                   f"wrong){table(['error', 'records'], rows)}</div>")  # fmt: skip
    else:
        out.append('<p class="muted">No example failed (error column empty).</p>')
    return "\n".join(out)


def summary(c: dict[str, Any]) -> str:
    """Per-model table, then i.i.d. variance, out-of-distribution and adversarial tables (S1)."""
    s = c["summary"]
    rows = [
        [e(r["model"]), num(r["replicates"], 0), ci(r["clean_accuracy"], r["clean_lo"], r["clean_hi"]),
         pp(r["seed_std"]), pp(r["ood_mean_drop"]),
         f"{pp(r['ood_worst_drop'])} <span class=ci>{e(r['ood_worst'] or '')}</span>",
         f"{pct(r['adv_worst_accuracy'])} <span class=ci>{e(r['adv_worst'] or '')}</span>",
         f"{pct(r.get('cert_worst_accuracy'))} <span class=ci>{e(r.get('cert_worst') or '')}</span>",
         num(r["failing_examples"], 0)]
        for r in s["models"]
    ]  # fmt: skip
    head = ["model", "seeds", "clean accuracy [95% CI]", "seed std", "OOD mean drop",
            "OOD worst drop", "worst robust accuracy", "lowest certified accuracy",
            "failing records"]  # fmt: skip
    out = [table(head, rows, num_cols=range(1, 9))]
    out.append("<h3>I.i.d. variance</h3>")
    if s["iid"]:
        out.append(table(["model", "clean accuracy [95% CI]", "std across seeds", "n"], [
            [e(r["model"]), ci(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
             pp(r["accuracy_std"]), num(r["n"], 0)] for r in s["iid"]], num_cols=(1, 2, 3)))  # fmt: skip
        out.append(table(["model", "training seed", "clean accuracy [95% CI]", "n"], [
            [e(r["model"]), e(r["replicate"]), ci(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
             num(r["n"], 0)] for r in s["replicates"]], num_cols=(1, 2, 3)))  # fmt: skip
    else:
        out.append('<p class="muted">No clean records in this run.</p>')
    out.append("<h3>Out-of-distribution (perturbations and evaluation sets)</h3>")
    if s["ood"]:
        out.append(table(["model", "kind", "conditions", "mean accuracy", "mean drop", "worst drop", "at"], [
            [e(r["model"]), e(r["kind"]), num(r["conditions"], 0), pct(r["mean_accuracy"]),
             pp(r["mean_drop"]), pp(r["worst_drop"]), e(r["worst"])]
            for r in s["ood"]], num_cols=(2, 3, 4, 5)))  # fmt: skip
    else:
        out.append('<p class="muted">No perturbations or evaluation sets in this run.</p>')
    out.append("<h3>Adversarial</h3>")
    if s["adversarial"]:
        out.append(table(["model", "attack", "budget", "robust accuracy [95% CI]", "attack success", "mean queries"], [
            [e(r["model"]), e(r["probe"]), _budget(r), ci(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
             pct(r["attack_success_rate"]), num(r["mean_queries"], 1)] for r in s["adversarial"]],
            num_cols=(2, 3, 4, 5)))  # fmt: skip
    else:
        out.append('<p class="muted">No attacks in this run.</p>')
    out.append("<h3>Certified</h3>")
    if s.get("certified"):
        out.append(table(["model", "certifier", "radius", "certified accuracy [95% CI]", "n"], [
            [e(r["model"]), e(r["probe"]), _budget(r), ci(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
             num(r["n"], 0)] for r in s["certified"]], num_cols=(2, 3, 4)))  # fmt: skip
    else:
        out.append('<p class="muted">No certifiers in this run.</p>')
    return "\n".join(out)


def _budget(r: dict[str, Any]) -> str:
    """A level with its meaning: ``8/255 (epsilon (L∞))``."""
    axis = r.get("axis")
    return level(r["level"]) + (f" <span class=ci>{e(axis)}</span>" if axis else "")
