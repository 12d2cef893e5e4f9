"""``hotflip`` vs random token swaps (same threat model) and ``random-substitution`` (WordNet) at
the same budgets, on the tiny BBC-trained BERT of ``tests/test_hotflip.py`` (trained and cached
under the robustlab cache on first use, about 5 s CPU).

Prints, per budget, the success rate on the clean-correct test texts, mean queries and CPU time
(``time.process_time``, one torch thread), measured side by side in one run.

    python benchmarks/hotflip.py --n 100
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--tries", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import test_hotflip as th
    from robustlab.attacks.text.hotflip import allowed_tokens, splice
    from robustlab.core.paths import cache_dir
    from robustlab.core.registry import attacks, models
    from robustlab.core.rng import ExampleRNG
    from robustlab.data.text import bbc_news

    folder = cache_dir() / "test-models" / th.VERSION
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        th._train(folder)
    te = bbc_news(split="test", limit=args.n, max_words=30)
    x, y = list(te.x), te.y
    clf = models.create("hf-classifier", {"path": str(folder), "cache_size": 0})
    corr = clf.logits(x).argmax(1) == y
    print(f"clean-correct {int(corr.sum())} of {len(x)}")
    rng = ExampleRNG.from_seed(0, torch.arange(len(x)))
    tok = clf.tokenizer
    ok, strings = allowed_tokens(tok)
    pool = torch.nonzero(ok).flatten()
    enc = tok(x, truncation=True, max_length=clf.max_length, return_offsets_mapping=True)
    runs = [("hotflip", {"topk": 16}), ("hotflip", {"topk": 16, "beam_width": 4}),
            ("random-substitution", {"tries": args.tries, "min_similarity": 0,
                                     "constraints": False})]  # fmt: skip
    for b in (0.05, 0.1, 0.2):
        line = [f"budget {b}"]
        for name, params in runs:
            t = time.process_time()
            r = attacks.create(name, params)(clf, x, y, b, rng=rng)
            dt = time.process_time() - t
            q = float(r.queries[corr].double().mean())
            tag = name + (f" beam {params['beam_width']}" if "beam_width" in params else "")
            line.append(f"{tag}: {float(r.success[corr].double().mean()):.2f} "
                        f"(q {q:.0f}, cpu {dt:.2f}s)")  # fmt: skip
        gen = torch.Generator().manual_seed(0)
        rows, own = [], []
        for i in torch.nonzero(corr).flatten().tolist():
            off = enc["offset_mapping"][i]
            where = [p for p, (s, e) in enumerate(off) if e > s]
            cap = min(math.floor(b * len(x[i].split()) + 1e-9), len(where))
            for _ in range(args.tries):
                pick = torch.randperm(len(where), generator=gen)[:cap].tolist()
                new = pool[torch.randint(len(pool), (cap,), generator=gen)].tolist()
                sw = [(where[p], 0, v) for p, v in zip(pick, new, strict=True)]
                rows.append(splice(x[i], [tuple(o) for o in off], sw, strings))
                own.append(i)
        owner = torch.tensor(own)
        fooled = torch.zeros(len(x), dtype=torch.bool)
        fooled[owner[clf.logits(rows).argmax(1) != y[owner]]] = True
        line.append(f"random tokens x{args.tries}: {float(fooled[corr].double().mean()):.2f}")
        print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
