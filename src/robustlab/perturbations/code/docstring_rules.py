"""Rule-based docstring rewording (ReCode S2 "docstring" family; ContraBERT S10 NL operators):
tense change, back-translation-like phrase rewording, paraphrase, adjacent word swap.

No translation model: phrase tables stand in for back-translation (documented limit). Only prose
lines of the entry point's docstring change (examples and code-like lines are kept).

Example::

    perturbations.create("doc_back_translation")(problems, 1, rng)
"""

from __future__ import annotations

import random
import re
from typing import Any

from robustlab.core.registry import perturbations
from robustlab.perturbations.code._base import CodeTransform, edit_docstring_text


@perturbations.register("doc_word_swap")
class DocWordSwap(CodeTransform):
    """Swap two adjacent prose words of the docstring (ContraBERT S10 NL word switch)."""

    family = "docstring"

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        hits = []

        def line(ln: str) -> str:
            words = ln.split(" ")
            cand = [
                i for i in range(len(words) - 1) if words[i].isalpha() and words[i + 1].isalpha()
            ]
            if cand and r.random() < 0.5:
                i = r.choice(cand)
                words[i], words[i + 1] = words[i + 1], words[i]
                hits.append(i)
            return " ".join(words)

        return edit_docstring_text(p, line)


TENSE = {
    "is": "was",
    "are": "were",
    "returns": "returned",
    "has": "had",
    "have": "had",
    "does": "did",
    "do": "did",
    "takes": "took",
    "gives": "gave",
    "contains": "contained",
    "will": "would",
    "can": "could",
}
BACK = [
    (r"\bReturn\b", "Give back"),
    (r"\breturn\b", "give back"),
    (r"\bGiven\b", "Provided"),
    (r"\bgiven\b", "provided"),
    (r"\bWrite a function\b", "Create a function"),
    (r"\bcheck if\b", "determine whether"),
    (r"\bCheck if\b", "Determine whether"),
    (r"\bfind\b", "look for"),
    (r"\bcontains\b", "includes"),
    (r"\bnumbers\b", "numeric values"),
    (r"\bYou are given\b", "You receive"),
    (r"\bshould\b", "must"),
    (r"\beach\b", "every"),
]
PARA = [
    (r"\bdo not\b", "don't"),
    (r"\bdoes not\b", "doesn't"),
    (r"\bis not\b", "isn't"),
    (r"\bcannot\b", "can't"),
    (r"\bit is\b", "it's"),
    (r"\bIt is\b", "It's"),
    (r"\bdon't\b", "do not"),
    (r"\bdoesn't\b", "does not"),
    (r"\bisn't\b", "is not"),
    (r"\bin order to\b", "to"),
    (r"\bthat is\b", "which is"),
    (r"\bFor example\b", "For instance"),
    (r"\bExample\b", "For instance"),
    (r"\bin the list\b", "within the list"),
    (r"\bReturn\b", "The function returns"),
    (r"\bwhether\b", "if"),
]


class _Rules(CodeTransform):
    family = "docstring"
    rules: list[tuple[str, str]] = []
    prob = 0.7

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        def line(ln: str) -> str:
            for pat, rep in self.rules:
                if re.search(pat, ln) and r.random() < self.prob:
                    ln = re.sub(pat, rep, ln, count=1)
            return ln

        return edit_docstring_text(p, line)


@perturbations.register("doc_tense_transformation")
class DocTense(_Rules):
    """Present tense -> past tense in the docstring (ReCode TenseTransformation, rule-based)."""

    rules = [(rf"\b{a}\b", b) for a, b in TENSE.items()]


@perturbations.register("doc_back_translation")
class DocBackTranslation(_Rules):
    """Back-translation-like rewording with a phrase table (ReCode BackTranslation, no MT model)."""

    rules = BACK


@perturbations.register("doc_paraphrase")
class DocParaphrase(_Rules):
    """Rule-based paraphrase: contractions, expansions and phrase rewrites of the docstring."""

    rules = PARA
