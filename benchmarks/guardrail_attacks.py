"""Attack success on the RigorLLM-style guardrail vs its components, and the safe-suffix defence.

Spam (flagged) test e-mails of SpamAssassin that a model flags are attacked so that it lets them
through (predicts ham): GCG suffixes (gradient where the model has one, query-only always), and
the existing word-substitution attacks (TextFooler, random substitution). Then the safe-suffix
guardrail under the non-adaptive attack (suffixes found on the undefended guardrail, transferred)
and the adaptive one (GCG run on the defended model). Prints one table; numbers in
docs/guardrail.md. Run with one torch thread::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/guardrail_attacks.py --n-test 100
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG


def attack_rate(model, atk, x, y, ids, budget):  # noqa: ANN001, ANN201
    """(clean flag rate, success among flagged, mean queries, CPU s) on the flagged spam."""
    t = time.process_time()
    pred = model.logits(x).argmax(1)
    keep = torch.nonzero(pred == y).flatten()
    if keep.numel() == 0:
        return float(pred.eq(y).float().mean()), float("nan"), float("nan"), 0.0
    xs, ys = [x[i] for i in keep.tolist()], y[keep]
    res = atk(model, xs, ys, budget, rng=ExampleRNG.from_seed(0, ids[keep]))
    ok = model.logits(res.x_adv).argmax(1) != ys  # re-checked, as the runner does
    return (float(pred.eq(y).float().mean()), float(ok.float().mean()),
            float(res.queries.float().mean()), time.process_time() - t)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--n-tokens", type=int, default=8)
    ap.add_argument("--budget", type=float, default=0.2)
    ap.add_argument("--max-attacked", type=int, default=None)
    ap.add_argument("--part", choices=("all", "components", "defence"), default="all")
    ap.add_argument("--word-attacks", default="textfooler,random-substitution")
    ap.add_argument("--no-gcg", action="store_true", help="components: word attacks only")
    ap.add_argument("--max-queries", type=int, default=None, help="of the word attacks")
    ap.add_argument("--fit", default="{}", help="guardrail-safe-suffix parameters (JSON)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    d = datasets.create("spam-assassin", {"split": "test", "limit": a.n_test, "max_words": 48})
    spam = torch.nonzero(d.y == 1).flatten()[: a.max_attacked]
    x, y, ids = [d.x[i] for i in spam.tolist()], d.y[spam], d.ids[spam]  # type: ignore[index]
    print(f"SpamAssassin test: {len(d)} e-mails, {len(x)} spam attacked; budget {a.budget}, "
          f"GCG {a.n_tokens} tokens x {a.iterations} it x {a.candidates} cand")  # fmt: skip
    gcg = {"n_tokens": a.n_tokens, "iterations": a.iterations, "candidates": a.candidates}
    rows = []
    comps = {c: models.create("guardrail", {"component": c}) for c in ("knn", "lm", "fused")}
    for c, m in comps.items() if a.part != "defence" else []:
        acc = float((m.logits(d.x).argmax(1) == d.y).float().mean())
        print(f"clean accuracy {c}: {acc:.3f}", flush=True)
    plan = [(c, "gcg-grad", "gcg", {**gcg, "gradient": True}) for c in ("knn", "fused")]
    plan += [(c, "gcg-query", "gcg", {**gcg, "gradient": False}) for c in comps]
    plan = [] if a.no_gcg else plan
    mq = {"max_queries": a.max_queries}
    word = {"textfooler": mq, "random-substitution": {"tries": 8, **mq}}
    plan += [(c, w, w, word[w]) for w in a.word_attacks.split(",") if w for c in comps]
    for c, label, name, params in plan if a.part != "defence" else []:
        r = attack_rate(comps[c], attacks.create(name, params), x, y, ids, a.budget)
        rows.append((c, label, *r))
        print(f"{c:6s} {label:11s} flagged {r[0]:.3f} success {r[1]:.3f} "
              f"queries {r[2]:.0f} cpu {r[3]:.0f}s", flush=True)  # fmt: skip
    if a.part == "components":
        return
    t = time.process_time()
    fit = {"component": "fused", **json.loads(a.fit)}
    defended = models.create("guardrail-safe-suffix", fit)
    print(f"safe suffix {defended.safe_suffix!r} ({time.process_time() - t:.0f}s CPU to fit/load)")
    und = comps["fused"]
    # non-adaptive: suffixes found on the undefended guardrail, then the safe suffix appended
    pred = und.logits(x).argmax(1)
    keep = torch.nonzero(pred == y).flatten()
    xs, ys = [x[i] for i in keep.tolist()], y[keep]
    res = attacks.create("gcg", {**gcg, "gradient": True})(
        und, xs, ys, a.budget, rng=ExampleRNG.from_seed(0, ids[keep])
    )
    ok_und = und.logits(res.x_adv).argmax(1) != ys
    ok_def = defended.logits(res.x_adv).argmax(1) != ys
    print(f"transfer: success on undefended {ok_und.float().mean():.3f}, "
          f"same suffixes on defended {ok_def.float().mean():.3f}")  # fmt: skip
    r = attack_rate(defended, attacks.create("gcg", {**gcg, "gradient": True}), x, y, ids, a.budget)
    print(f"adaptive gcg-grad on defended: flagged {r[0]:.3f} success {r[1]:.3f} "
          f"queries {r[2]:.0f} cpu {r[3]:.0f}s")  # fmt: skip
    acc = float((defended.logits(d.x).argmax(1) == d.y).float().mean())
    print(f"clean accuracy defended fused: {acc:.3f}")


if __name__ == "__main__":
    main()
