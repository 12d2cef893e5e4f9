"""Transformations per second over all 164 HumanEval prompts, and each one's change rate.

For every code transformation: variant 1 on the nominal prompts (docstring, function, format
families) or the partial-code prompts (syntax family, as in ReCode), timed; prints prompts/s, the
fraction of the 164 prompts it changed, and how many it skipped (with the most common reason).
"""

from __future__ import annotations

import time
from collections import Counter

import torch

from robustlab.code.problems import load_humaneval
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG


def main() -> None:
    probs = {False: load_humaneval(), True: load_humaneval(partial=True)}
    names = [
        n for n in perturbations.names() if getattr(perturbations.get(n), "modality", "") == "code"
    ]
    rng_ids = torch.arange(164)
    print(
        f"{'transformation':30s} {'family':9s} {'prompts':7s} {'/s':>8s} {'changed':>8s} {'skipped':>8s}  reason"
    )
    total_t, total_n = 0.0, 0
    for name in names:
        t = perturbations.create(name)
        partial = t.family == "syntax"
        ps = probs[partial]
        t(ps[:2], 1, ExampleRNG.from_seed(0, rng_ids[:2]))  # warm caches (WordNet index)
        t0 = time.perf_counter()
        out = t(ps, 1, ExampleRNG.from_seed(0, rng_ids))
        dt = time.perf_counter() - t0
        total_t += dt
        total_n += len(ps)
        changed = sum(o["prompt"] != p["prompt"] for o, p in zip(out, ps, strict=True))
        reasons = Counter(o["skipped"].split(": ", 1)[1] for o in out if o.get("skipped"))
        why = reasons.most_common(1)[0][0] if reasons else ""
        print(
            f"{name:30s} {t.family:9s} {'partial' if partial else 'nominal':7s} {len(ps) / dt:8.0f} "
            f"{changed / len(ps):8.1%} {sum(reasons.values()):8d}  {why}"
        )
    print(f"all {len(names)} transformations: {total_n / total_t:.0f} prompts/s overall")


if __name__ == "__main__":
    main()
