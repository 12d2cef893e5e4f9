"""Substitution candidates for word-level attacks: WordNet 3.0 synonyms by part of speech.

Reads Debian ``wordnet-base`` (``$WORDNET_DIR`` or ``/usr/share/wordnet``) once: ``index.<pos>``
gives a lemma's synsets in sense-frequency order and its tagged-sense count per part of speech;
``data.<pos>`` gives each synset's lemmas. An inflected word is reduced to its lemma by WordNet's
``morphy`` detachment rules (the rules NLTK uses) and each candidate is inflected back with the same
rule (``rates`` -> ``rate`` -> ``pace`` -> ``paces``). Irregular forms come from WordNet's
exception lists (``slipped`` -> ``slip``) and candidates are inflected with the same Penn tag by
``lemminflect`` (``slide`` -> ``slid``); without ``lemminflect`` irregular forms get no candidates.

``pos="dominant"`` keeps only synonyms of the word's most frequent part of speech (largest tagged
sense count, a context-free stand-in for a POS tagger); ``pos="any"`` takes all parts of speech.
Embedding-neighbour candidates are in :mod:`~robustlab.attacks.text.sources`. Stop words
(scikit-learn's English list) and words that are not purely alphabetic are never substituted.

Example::

    synonyms("slipped")          # ('stole', 'skidded', 'slued', 'slewed', 'slid', ...)
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from robustlab.core.errors import ConfigError

POS = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
RULES = {  # morphy detachment rules (suffix of the inflected form, ending of the lemma)
    "n": (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"),
          ("shes", "sh"), ("men", "man"), ("ies", "y")),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""),
          ("ing", "e"), ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}  # fmt: skip
WORD = re.compile(r"^(\W*)([A-Za-z]+)(\W*)$")


def _root() -> Path:
    root = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
    if not all((root / f"{k}.{p}").is_file() for p in POS.values() for k in ("index", "data")):
        raise ConfigError(
            f"WordNet index/data files not found in {root} (apt-get install wordnet-base, or set "
            "WORDNET_DIR)"
        )
    return root


Table = dict[tuple[str, str], tuple[str, ...]]


def wordnet() -> tuple[Table, dict[str, dict[str, int]]]:
    """``({(lemma, pos): synonyms in sense order}, {lemma: {pos: tagged sense count}})``."""
    syn, freq, _ = _tables()
    return syn, freq


def tagged_synonyms() -> Table:
    """``{(lemma, pos): synonyms}`` from the lemma's *tagged* senses only: those WordNet's index
    counts as seen in its sense-tagged corpus (SemCor), which come first in sense order. A rare
    sense (``fall`` -> ``accrue``, sense 19 of 32, 15 tagged) is left out."""
    return _tables()[2]


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[Table, dict[str, dict[str, int]], Table]:
    root = _root()
    syn: Table = {}
    tagged: Table = {}
    freq: dict[str, dict[str, int]] = {}
    for p, name in POS.items():
        lemmas: dict[str, list[str]] = {}
        with open(root / f"data.{name}", encoding="latin-1") as fh:
            for line in fh:
                if line.startswith("  "):
                    continue  # licence header
                parts = line.split(" ", 4)
                words = line.split()[4 : 4 + 2 * int(parts[3], 16) : 2]
                lemmas[parts[0]] = [w.split("(")[0].lower() for w in words]
        with open(root / f"index.{name}", encoding="latin-1") as fh:
            for line in fh:
                if line.startswith("  "):
                    continue
                f = line.split()
                lemma, n_syn, n_ptr = f[0], int(f[2]), int(f[3])
                if not lemma.isalpha():
                    continue
                freq.setdefault(lemma, {})[p] = int(f[5 + n_ptr]) * 1000 + n_syn
                out: list[str] = []
                n_tagged, cut = int(f[5 + n_ptr]), 0
                for k, off in enumerate(f[6 + n_ptr : 6 + n_ptr + n_syn]):
                    for w in lemmas.get(off, ()):
                        if w.isalpha() and w != lemma and w not in out:
                            out.append(w)
                    cut = len(out) if k < n_tagged else cut
                if out:
                    syn[(lemma, p)] = tuple(out)
                if cut:
                    tagged[(lemma, p)] = tuple(out[:cut])
    return syn, freq, tagged


@functools.lru_cache(maxsize=1)
def exceptions() -> dict[str, tuple[tuple[str, str], ...]]:
    """Irregular forms: ``{inflected: ((lemma, pos), ...)}`` from WordNet's ``<pos>.exc`` files."""
    root, out = _root(), {}
    for p, name in POS.items():
        f = root / f"{name}.exc"
        if f.is_file():
            for line in f.read_text(encoding="latin-1").splitlines():
                w, *bases = line.split()
                out[w] = out.get(w, ()) + tuple((b, p) for b in bases if b.isalpha())
    return out


_UPOS = {"n": "NOUN", "v": "VERB", "a": "ADJ", "r": "ADV"}


def _irregular(word: str, lemma: str, pos: str) -> str | None:
    """The Penn tag of ``word`` as an inflection of ``lemma`` (None without lemminflect)."""
    try:
        from lemminflect import getAllInflections
    except ModuleNotFoundError:
        return None
    tags = [t for t, forms in getAllInflections(lemma, upos=_UPOS[pos]).items() if word in forms]
    return tags[0] if tags else None


@functools.lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """Words never substituted: scikit-learn's English stop-word list (318 words)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def _lemmas(
    word: str, freq: dict[str, dict[str, int]], inflect: bool
) -> list[tuple[str, str, str, str]]:
    """``(lemma, pos, suffix, ending)`` readings of a lower-case word (direct hits first)."""
    hits = [(word, p, "", "") for p in freq.get(word, {})]
    for base, p in exceptions().get(word, ()):
        if p not in freq.get(base, {}):
            continue
        tag = _irregular(word, base, p) if inflect and p != "a" else None
        if tag or not inflect:
            hits.append((base, p, "tag", tag or ""))
    for p, rules in RULES.items():
        for suf, end in rules:
            if word.endswith(suf) and len(word) > len(suf):
                base = word[: len(word) - len(suf)] + end
                if p in freq.get(base, {}) and (base, p, suf, end) not in hits:
                    hits.append((base, p, suf, end))
    return hits


def _inflect(lemma: str, suf: str, end: str) -> str | None:
    if suf == "tag":
        from lemminflect import getInflection  # only reached when lemminflect imported before

        forms = getInflection(lemma, tag=end)
        return forms[0] if forms and forms[0].isalpha() else None
    if not end:
        if suf == "s" and lemma.endswith(("s", "x", "z", "ch", "sh")):
            return None  # would need -es (or is plural already: laurels)
        return lemma + suf
    return lemma[: len(lemma) - len(end)] + suf if lemma.endswith(end) else None


PARTS = ("dominant", "any", *POS)
SENSES = ("all", "tagged")


@functools.lru_cache(maxsize=200_000)
def synonyms(
    word: str,
    pos: str = "dominant",
    max_candidates: int = 30,
    inflect: bool = True,
    senses: str = "all",
) -> tuple[str, ...]:
    """Lower-case substitution candidates for ``word`` (empty for stop words and unknown words).

    ``pos`` is ``"dominant"``, ``"any"`` or one WordNet part of speech (``n v a r``, e.g. from a
    tagger: only readings of that part of speech). ``senses="tagged"`` takes synonyms from the
    word's corpus-tagged senses only (:func:`tagged_synonyms`).
    ``inflect=False`` gives NLTK/TextAttack-style candidates: the uninflected lemmas of every
    synset of every reading (``awards`` -> ``award``, ``accolade``), for like-for-like comparisons.
    All-caps words (``US``, ``IT``) are acronyms, not stop words.
    """
    if pos not in PARTS:
        raise ConfigError(f"pos must be one of {PARTS}, got {pos!r}")
    if senses not in SENSES:
        raise ConfigError(f"senses must be one of {SENSES}, got {senses!r}")
    w = word.lower()
    acronym = word.isupper() and len(word) > 1
    if not w.isalpha() or len(w) < 2 or (w in stop_words() and not acronym):
        return ()
    syn, freq = wordnet()
    if senses == "tagged":
        syn = tagged_synonyms()
    readings = _lemmas(w, freq, inflect)
    if acronym:  # no morphology on acronyms (US is not the plural of U)
        readings = [r for r in readings if not r[2]]
    if pos in POS:
        readings = [r for r in readings if r[1] == pos]
    elif pos == "dominant" and readings:
        best = max(readings, key=lambda r: (freq[r[0]][r[1]], -readings.index(r)))
        readings = [r for r in readings if r[1] == best[1]]
    out: list[str] = []
    for lemma, p, suf, end in readings:
        if not inflect and lemma != w and lemma not in out:
            out.append(lemma)  # NLTK lists the lemma itself among its synsets' lemma names
        for s in syn.get((lemma, p), ()):
            c = _inflect(s, suf, end) if inflect else s
            if c and c != w and c not in out:
                out.append(c)
    return tuple(out[:max_candidates])
