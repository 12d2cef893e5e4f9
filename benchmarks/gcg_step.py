"""GCG suffix search: CPU time of one iteration vs the bare forward of its candidates.

One iteration (:func:`robustlab.attacks.text.gcg.step`) on ``n`` spam e-mails with ``C``
candidates each = the token gradient (one forward + backward through MiniLM and the soft k-NN,
plus the one-hot product with the 21k-word suffix vocabulary), sampling, building the ``n * C``
candidate texts and scoring them in batched guardrail calls. The bare forward scores the same
``n * C`` texts with the guardrail directly (tokenizer + MiniLM + k-NN + LM score, embedding cache
cleared), and, as a lower bound, MiniLM's network alone on the pre-tokenized texts. Target: the
iteration <= 1.2x the bare guardrail forward. Alternating repeats, thread CPU time, one thread::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gcg_step.py --n 4 --candidates 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustlab.attacks.text.common import Scorer
from robustlab.attacks.text.gcg import Problem, SearchConfig, step, suffix_vocab
from robustlab.core.registry import datasets, models
from robustlab.core.rng import ExampleRNG


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--n-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    guard = models.create("guardrail", {"component": "fused"})
    d = datasets.create("spam-assassin", {"split": "test", "limit": 100, "max_words": 48})
    spam = torch.nonzero(d.y == 1).flatten()[: a.n]
    x, y = [d.x[i] for i in spam.tolist()], d.y[spam]
    ids, words = suffix_vocab(str(guard.encoder.path))
    n = len(x)
    p = Problem(guard, x, y, torch.arange(n), torch.full((n,), a.n_tokens), 1.0, ids, words)
    cfg = SearchConfig(1, a.candidates, 64, True)
    cur = torch.full((n, a.n_tokens), words.index("the"), dtype=torch.int64)
    rows = torch.arange(n)
    enc = guard.encoder
    it_t, bare_t, net_t = [], [], []
    for r in range(a.repeats + 1):
        u = ExampleRNG.from_seed(r, spam).uniform(a.candidates, 2, dtype=torch.float64)
        enc._queries.clear()
        t0 = time.thread_time()
        cand, _, _ = step(p, cur, rows, u, cfg, True, Scorer(guard, y, None, 256))
        t1 = time.thread_time()
        texts = p.strings(cand, rows)[0]
        enc._queries.clear()
        t2 = time.thread_time()
        for s in range(0, len(texts), 256):  # the guardrail's own call, same chunks as the attack
            guard.logits(texts[s : s + 256])
        t3 = time.thread_time()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        toks = [enc.tokens([texts[i] for i in order[s : s + enc.batch_size]])
                for s in range(0, len(order), enc.batch_size)]  # fmt: skip
        t4 = time.thread_time()
        with torch.no_grad():
            for tk in toks:
                enc.embed(tk["input_ids"], tk["attention_mask"])
        t5 = time.thread_time()
        if r:  # the first round warms up
            it_t.append(t1 - t0), bare_t.append(t3 - t2), net_t.append(t5 - t4)
    ratio = [i / b for i, b in zip(it_t, bare_t, strict=True)]
    ratio_net = [i / b for i, b in zip(it_t, net_t, strict=True)]
    print(f"{n} examples x {a.candidates} candidates x {a.n_tokens} suffix tokens, "
          f"{a.repeats} repeats (thread CPU s, medians)")  # fmt: skip
    print(
        f"iteration {statistics.median(it_t):.3f}  bare guardrail forward "
        f"{statistics.median(bare_t):.3f}  MiniLM network only {statistics.median(net_t):.3f}"
    )
    print(
        f"iteration / bare guardrail forward: median {statistics.median(ratio):.3f}x "
        f"(range {min(ratio):.3f}-{max(ratio):.3f}); target <= 1.2x"
    )
    print(f"iteration / MiniLM network only:    median {statistics.median(ratio_net):.3f}x")


if __name__ == "__main__":
    main()
