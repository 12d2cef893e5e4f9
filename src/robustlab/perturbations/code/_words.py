"""Word resources for docstring/function-name transformations: WordNet synonyms, keyboard typos.

Synonyms come from the Debian ``wordnet-base`` database (``/usr/share/wordnet``, read directly:
the first sense per part of speech, single-word lemmas) when installed, else from a small built-in table.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")
FALLBACK = {
    "return": ["give back", "output"],
    "list": ["listing", "array"],
    "number": ["figure", "count"],
    "given": ["provided"],
    "check": ["verify", "test"],
    "string": ["text"],
    "find": ["detect"],
    "value": ["amount"],
    "largest": ["biggest"],
    "smallest": ["tiniest"],
    "sum": ["total"],
    "count": ["tally"],
    "element": ["item"],
    "word": ["term"],
    "result": ["outcome"],
    "get": ["obtain"],
    "make": ["create"],
    "sort": ["order"],
    "remove": ["delete"],
}
KEYBOARD = {
    "q": "was",
    "w": "qesad",
    "e": "wsdfr",
    "r": "edfgt",
    "t": "rfghy",
    "y": "tghju",
    "u": "yhjki",
    "i": "ujklo",
    "o": "iklp",
    "p": "ol",
    "a": "qwsz",
    "s": "qweadzx",
    "d": "wersfxc",
    "f": "ertdgcv",
    "g": "rtyfhvb",
    "h": "tyugjbn",
    "j": "yuihknm",
    "k": "uiojlm",
    "l": "iopk",
    "z": "asx",
    "x": "zsdc",
    "c": "xdfv",
    "v": "cfgb",
    "b": "vghn",
    "n": "bhjm",
    "m": "njk",
}


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, list[tuple[str, int]]]:
    idx: dict[str, list[tuple[str, int]]] = {}
    for pos in ("verb", "adj", "adv", "noun"):
        path = WORDNET / f"index.{pos}"
        if not path.is_file():
            return {}
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            f = line.split()
            n_syn = int(f[2])
            offsets = [int(o) for o in f[-n_syn:][:1]]
            idx.setdefault(f[0], []).extend((pos, o) for o in offsets)
    return idx


@functools.lru_cache(maxsize=4096)
def synonyms(word: str) -> tuple[str, ...]:
    """Synonyms of ``word`` (lower-case lemma), WordNet if available, else the built-in table."""
    w = word.lower()
    idx = _index()
    if not idx:
        return tuple(FALLBACK.get(w, ()))
    out: list[str] = []
    for pos, off in idx.get(w, [])[:3]:
        with open(WORDNET / f"data.{pos}", "rb") as f:
            f.seek(off)
            fields = f.readline().decode("latin-1").split()
        n = int(fields[3], 16)
        for i in range(n):
            lemma = fields[4 + 2 * i].split("(")[0].replace("_", " ")
            if lemma.lower() != w and lemma not in out and lemma.isalpha() and lemma.islower():
                out.append(lemma)
    if not out and w.endswith("s") and len(w) > 3:
        return synonyms(w[:-1])
    return tuple(out[:6]) or tuple(FALLBACK.get(w, ()))


def match_case(new: str, old: str) -> str:
    if old.isupper() and len(old) > 1:
        return new.upper()
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def butter_finger(word: str, r: random.Random, prob: float = 0.1) -> str:
    chars = list(word)
    idx = [i for i, c in enumerate(chars) if c.lower() in KEYBOARD]
    if not idx:
        return word
    hits = [i for i in idx if r.random() < prob] or [r.choice(idx)]
    for i in hits:
        c = r.choice(KEYBOARD[chars[i].lower()])
        chars[i] = c.upper() if chars[i].isupper() else c
    return "".join(chars)


def swap_chars(word: str, r: random.Random) -> str:
    if len(word) < 2:
        return word
    i = r.randrange(len(word) - 1)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
