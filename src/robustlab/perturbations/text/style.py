"""Style-level word perturbations that keep the meaning: casing and contractions.

Threat model: invariance tests (CheckList, Ribeiro et al., ACL 2020, "INV" tests with contractions;
Giskard's case transformations): a label-preserving rewrite of the surface form. Severity is the
edit rate: each word (``casing``) or each contractible phrase (``contractions``) is changed with that
probability using the text's own random stream.

* ``casing``: the word becomes lower, UPPER or Title case (``mode="random"``, a case different from
  its current one), or always ``"lower"``/``"upper"``/``"title"``.
* ``contractions``: "do not" <-> "don't", "it is" <-> "it's", ... (:data:`CONTRACTIONS`, both
  directions with ``direction="both"``, or only ``"expand"``/``"contract"``). Ambiguous contractions
  ("'d" = had/would) are left out; "'s" is read as "is".

Example::

    c = perturbations.create("contractions")
    c(["We do not think it is over"], 1.0, rng)   # -> ["We don't think it's over"]
"""

from __future__ import annotations

import re

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import EDIT_RATE
from robustlab.perturbations.text import SEVERITIES, check_texts, match_case
from robustlab.perturbations.text.words import _WordEdit, split_word

_CASES = ("lower", "upper", "title")


def _case(w: str, kind: str) -> str:
    return (
        w.lower()
        if kind == "lower"
        else w.upper()
        if kind == "upper"
        else w[:1].upper() + w[1:].lower()
    )


@perturbations.register("casing")
class Casing(_WordEdit):
    """Change the case of a share ``severity`` of the words (lower / UPPER / Title)."""

    def __init__(self, mode: str = "random") -> None:
        if mode not in ("random", *_CASES):
            raise ConfigError(f"casing mode must be random, lower, upper or title, got {mode!r}")
        self.mode = mode

    def one(self, word: str, u: list[float]) -> str:
        parts = split_word(word)
        if parts is None:
            return word
        core = parts[1]
        kind = self.mode
        if kind == "random":
            kinds = [k for k in _CASES if _case(core, k) != core] or list(_CASES)
            kind = kinds[min(int(u[0] * len(kinds)), len(kinds) - 1)]
        return parts[0] + _case(core, kind) + parts[2]


CONTRACTIONS: tuple[tuple[str, str], ...] = (
    ("are not", "aren't"), ("cannot", "can't"), ("could not", "couldn't"), ("did not", "didn't"),
    ("does not", "doesn't"), ("do not", "don't"), ("had not", "hadn't"), ("has not", "hasn't"),
    ("have not", "haven't"), ("he is", "he's"), ("he will", "he'll"), ("i am", "i'm"),
    ("i have", "i've"), ("i will", "i'll"), ("is not", "isn't"), ("it is", "it's"),
    ("it will", "it'll"), ("let us", "let's"), ("must not", "mustn't"), ("she is", "she's"),
    ("she will", "she'll"), ("should not", "shouldn't"), ("that is", "that's"),
    ("there is", "there's"), ("they are", "they're"), ("they have", "they've"),
    ("they will", "they'll"), ("was not", "wasn't"), ("we are", "we're"), ("we have", "we've"),
    ("we will", "we'll"), ("were not", "weren't"), ("what is", "what's"), ("who is", "who's"),
    ("will not", "won't"), ("would not", "wouldn't"), ("you are", "you're"),
    ("you have", "you've"), ("you will", "you'll"),
)  # fmt: skip
_EXPAND = {c: e for e, c in CONTRACTIONS}
_CONTRACT = {e: c for e, c in CONTRACTIONS}


def _pattern(phrases: list[str]) -> re.Pattern[str]:
    alts = sorted((re.escape(p).replace("'", "['\u2019]").replace(r"\ ", r"\s+") for p in phrases),
                  key=len, reverse=True)  # fmt: skip
    return re.compile(r"(?<![\w'\u2019])(?:" + "|".join(alts) + r")(?![\w'\u2019])", re.I)


_PATTERNS = {
    "both": _pattern(list(_EXPAND) + list(_CONTRACT)),
    "expand": _pattern(list(_EXPAND)),
    "contract": _pattern(list(_CONTRACT)),
}


def _swap(phrase: str) -> str:
    key = " ".join(phrase.replace("\u2019", "'").lower().split())
    new = _EXPAND.get(key) or _CONTRACT[key]
    first = phrase.split()[0] if " " in phrase else phrase
    if phrase.isupper() and len(phrase) > 1:
        return new.upper()
    new = "I" + new[1:] if new.startswith(("i ", "i'")) else new
    return match_case(new, first) if first[:1].isupper() else new


@perturbations.register("contractions")
class Contractions:
    """Expand or contract a share ``severity`` of the contractible phrases (see module doc)."""

    modality = "text"
    level_domain = EDIT_RATE
    severities = SEVERITIES

    def __init__(self, direction: str = "both") -> None:
        if direction not in _PATTERNS:
            raise ConfigError(
                f"contractions direction must be both, expand or contract, got {direction!r}"
            )
        self.direction = direction

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        check_texts(x, severity, "contractions")
        if severity == 0:
            return list(x)
        pat = _PATTERNS[self.direction]
        spans = [list(pat.finditer(t)) for t in x]
        u = rng.uniform(max((len(s) for s in spans), default=0) or 1).tolist()
        out = []
        for t, ms, uu in zip(x, spans, u, strict=True):
            parts, end = [], 0
            for m, v in zip(ms, uu, strict=False):
                if v < severity:
                    parts += [t[end : m.start()], _swap(m.group())]
                    end = m.end()
            out.append("".join(parts) + t[end:])
        return out
