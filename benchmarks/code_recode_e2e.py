"""End-to-end ReCode-style run of SmolLM2-135M on a fixed HumanEval subset, wall time measured.

First 10 problems (partial code), nominal + 4 transformations (one per family) x 2 variants,
greedy, SmolLM2 in chat mode answering with the whole function (task style "instruct"), 256 tokens;
run through the runner into a temporary store with an empty temporary completion cache
(generation + sandboxed execution), then a second fresh run of the same suite: completions come
from the disk cache, so it costs no generation. ``--warm`` keeps the user's cache instead.
Prints both wall times, their ratio, completions generated, and the ReCode table.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from robustlab.metrics.code import recode_table
from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite, run_suite
from robustlab.store import Store


def suite(n: int) -> Suite:
    probes = [
        "doc_synonym_substitution",
        "func_synonym",
        "format_newline_insertion",
        "code_dead_code",
    ]
    return Suite(
        name="recode-e2e",
        models=[ModelSpec(name="smollm2-135m", params={"chat": True})],
        task=ComponentSpec(name="code-generation", params={"max_tokens": 256, "style": "instruct"}),
        data=ComponentSpec(name="humaneval", params={"partial": True, "limit": n}),
        probes=[ProbeSpec(kind="perturbation", name=p, levels=[1, 2]) for p in probes],
    )


def main(n: int = 10, warm: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if not warm:
            os.environ["ROBUSTLAB_CACHE"] = str(Path(tmp) / "cache")
        store = Store(str(Path(tmp) / "store.db"))
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            run_id = run_suite(suite(n), store, resume=False, progress=False)
            times.append(time.perf_counter() - t0)
        df = store.records(run_id)
    print(f"problems: {n}, records: {len(df)}")
    print(f"first run (generation + execution): {times[0]:.1f} s")
    print(
        f"second run (cached completions):    {times[1]:.1f} s   ratio {times[0] / times[1]:.1f}x"
    )
    table = recode_table(df, k=1)
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--warm"]
    main(int(args[0]) if args else 10, warm="--warm" in sys.argv)
