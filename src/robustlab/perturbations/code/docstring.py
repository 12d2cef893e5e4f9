"""Docstring transformations (ReCode S2 family "docstring", NL-Augmenter-style; ContraBERT S10 NL ops).

Only prose lines of the entry point's docstring change: examples (``>>>``, ``==``, digits, calls),
quoted text and words that are identifiers of the code are kept, so the task is unchanged.
Threat model: natural noise and rewording in the natural-language part of the prompt.

Example::

    from robustlab.core.registry import perturbations
    t = perturbations.create("doc_synonym_substitution")
    t(problems, 1, ExampleRNG.from_seed(0, torch.arange(len(problems))))   # variant 1
"""

from __future__ import annotations

import random
from typing import Any

from robustlab.core.registry import perturbations
from robustlab.perturbations.code._base import (
    CodeTransform,
    edit_docstring_words,
)
from robustlab.perturbations.code._words import butter_finger, match_case, swap_chars, synonyms


class _WordEdit(CodeTransform):
    family = "docstring"
    rate = 0.1

    def edit(self, word: str, r: random.Random) -> str:
        raise NotImplementedError

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        return edit_docstring_words(p, r, self.edit, self.rate)


def _register(name: str, edit: Any, rate: float = 0.1, doc: str = "") -> None:
    cls = type(name, (_WordEdit,), {"edit": staticmethod(edit), "rate": rate, "__doc__": doc})
    perturbations.register(name)(cls)


def _synonym(w: str, r: random.Random) -> str:
    syn = synonyms(w)
    return match_case(r.choice(syn), w) if syn else w


def _syn_insert(w: str, r: random.Random) -> str:
    syn = synonyms(w)
    return f"{w} {r.choice(syn)}" if syn else w


def _inflect(w: str, r: random.Random) -> str:
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    if w.endswith("ed"):
        return w[:-1] if w.endswith("ed") and len(w) > 4 else w
    return w + ("es" if w.endswith(("s", "x", "ch", "sh")) else "s")


def _case(w: str, r: random.Random) -> str:
    return "".join(c.upper() if r.random() < 0.35 else c for c in w)


def _whitespace(w: str, r: random.Random) -> str:
    i = r.randrange(1, len(w))
    return w[:i] + " " + w[i:]


def _char_delete(w: str, r: random.Random) -> str:
    i = r.randrange(len(w))
    return w[:i] + w[i + 1 :]


def _char_insert(w: str, r: random.Random) -> str:
    i = r.randrange(len(w) + 1)
    return w[:i] + r.choice("abcdefghijklmnopqrstuvwxyz") + w[i:]


_register(
    "doc_butter_fingers",
    lambda w, r: butter_finger(w, r, 0.1),
    0.15,
    "Keyboard-neighbour typos in docstring words (ReCode ButterFingers).",
)
_register(
    "doc_swap_characters",
    swap_chars,
    0.1,
    "Swap two adjacent characters in docstring words (ReCode SwapCharacters).",
)
_register("doc_char_deletion", _char_delete, 0.1, "Delete one character in some docstring words.")
_register(
    "doc_char_insertion", _char_insert, 0.1, "Insert one random letter in some docstring words."
)
_register(
    "doc_change_char_case",
    _case,
    0.3,
    "Upper-case random characters of docstring words (ReCode ChangeCharCase).",
)
_register(
    "doc_whitespace",
    _whitespace,
    0.1,
    "Split docstring words with a space (ReCode WhitespacePerturbation).",
)
_register(
    "doc_synonym_substitution",
    _synonym,
    0.3,
    "Replace docstring words by WordNet synonyms (ReCode SynonymSubstitution; ContraBERT).",
)
_register(
    "doc_synonym_insertion",
    _syn_insert,
    0.2,
    "Insert WordNet synonyms after docstring words (ReCode SynonymInsertion).",
)
_register(
    "doc_inflectional_variation",
    _inflect,
    0.3,
    "Change the inflection of docstring words (ReCode EnglishInflectionalVariation).",
)
_register(
    "doc_word_deletion",
    lambda w, r: "",
    0.1,
    "Delete random docstring words (ContraBERT NL word deletion).",
)
