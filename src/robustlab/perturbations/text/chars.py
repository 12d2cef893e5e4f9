"""Character-level text noise: swaps, deletions, insertions, OCR confusions, real misspellings.

Threat model: natural noise (S18's "transformations" paradigm; Belinkov & Bisk, 2018, "Synthetic
and natural noise both break neural machine translation"). Severity is the edit rate: each word is
edited with that probability, by one character edit (``char_swap``, ``char_delete``,
``char_insert``), one OCR confusion (``ocr``: rn<->m, cl<->d, l<->1, O<->0, ...), or replaced by a
real human misspelling of it (``misspelling``: the codespell dictionary, inverted correct ->
misspellings, as in Belinkov & Bisk's natural-noise tables). Words an edit cannot apply to (too
short, no OCR-confusable letters, no known misspelling) stay as they are. Punctuation around a word
is kept; words are whitespace-separated.

Example::

    ocr = perturbations.create("ocr")
    ocr(["Modern learning"], 1.0, ExampleRNG.from_seed(0, torch.arange(1)))  # ['Modcrn learnlng']
"""

from __future__ import annotations

import functools
import re
import string
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.perturbations.text import match_case, vector
from robustlab.perturbations.text.words import _WordEdit, split_word

_LETTERS = string.ascii_lowercase


class _CharEdit(_WordEdit):
    shortest = 2
    per_word = 2

    def char(self, w: str, u_pos: float, u_char: float) -> str:
        raise NotImplementedError

    def one(self, word: str, u: list[float]) -> str:
        parts = split_word(word)
        if parts is None or len(parts[1]) < self.shortest:
            return word
        return parts[0] + self.char(parts[1], *u) + parts[2]


@perturbations.register("char_swap")
class CharSwap(_CharEdit):
    """Swap two adjacent letters of a word (the first letter stays; words of 3+ letters)."""

    shortest = 3

    vectorised = staticmethod(vector.char_swap)

    def char(self, w: str, u_pos: float, u_char: float) -> str:
        i = 1 + min(int(u_pos * (len(w) - 2)), len(w) - 3)
        return w[:i] + w[i + 1] + w[i] + w[i + 2 :]


@perturbations.register("char_delete")
class CharDelete(_CharEdit):
    """Delete one letter of a word (words of 3+ letters)."""

    shortest = 3

    vectorised = staticmethod(vector.char_delete)

    def char(self, w: str, u_pos: float, u_char: float) -> str:
        i = min(int(u_pos * len(w)), len(w) - 1)
        return w[:i] + w[i + 1 :]


@perturbations.register("char_insert")
class CharInsert(_CharEdit):
    """Insert a random letter a-z into a word (upper case inside an all-caps word)."""

    shortest = 1

    vectorised = staticmethod(vector.char_insert)

    def char(self, w: str, u_pos: float, u_char: float) -> str:
        i = min(int(u_pos * (len(w) + 1)), len(w))
        c = _LETTERS[min(int(u_char * 26), 25)]
        return w[:i] + (c.upper() if w.isupper() and len(w) > 1 else c) + w[i:]


# OCR confusions (both directions where the shapes are alike); longest patterns are matched first
OCR_CONFUSIONS: dict[str, tuple[str, ...]] = {
    "rn": ("m",), "m": ("rn",), "cl": ("d",), "d": ("cl",), "vv": ("w",), "w": ("vv",),
    "ri": ("n",), "li": ("h",), "l": ("1", "I"), "I": ("l", "1"), "1": ("l",), "i": ("l",),
    "O": ("0",), "0": ("O",), "o": ("0",), "S": ("5",), "5": ("S",), "B": ("8",), "8": ("B",),
    "Z": ("2",), "2": ("Z",), "g": ("9",), "q": ("9",), "e": ("c",), "c": ("e",), "h": ("b",),
    "b": ("h",), "u": ("v",), "v": ("u",), "n": ("h",), "G": ("6",), "6": ("G",),
}  # fmt: skip
_OCR = re.compile("|".join(sorted(map(re.escape, OCR_CONFUSIONS), key=len, reverse=True)))


@functools.lru_cache(maxsize=1 << 16)
def _ocr_spots(w: str) -> tuple[tuple[int, int, tuple[str, ...]], ...]:
    """The confusable spans of ``w``, left to right: (start, end, replacements)."""
    return tuple((m.start(), m.end(), OCR_CONFUSIONS[m.group()]) for m in _OCR.finditer(w))


@perturbations.register("ocr")
class OCR(_CharEdit):
    """One OCR confusion per edited word (rn->m, cl->d, l->1, O->0, e->c, ...; see
    :data:`OCR_CONFUSIONS`), at a uniformly drawn confusable position."""

    shortest = 1

    vectorised = staticmethod(vector.ocr)

    def char(self, w: str, u_pos: float, u_char: float) -> str:
        spots = _ocr_spots(w)
        if not spots:
            return w
        i, j, subs = spots[min(int(u_pos * len(spots)), len(spots) - 1)]
        return w[:i] + subs[min(int(u_char * len(subs)), len(subs) - 1)] + w[j:]


def codespell_path() -> Path:
    try:
        import codespell_lib
    except ModuleNotFoundError:
        raise ConfigError(
            "misspelling needs the codespell dictionary: pip install codespell"
        ) from None
    return Path(codespell_lib.__file__).parent / "data" / "dictionary.txt"


@functools.lru_cache(maxsize=1)
def misspellings_table() -> dict[str, tuple[str, ...]]:
    """``{correct word: (misspelling, ...)}`` from codespell's ``wrong->right`` dictionary
    (entries with one alphabetic correction only; lower case; about 13,900 words)."""
    table: dict[str, list[str]] = {}
    with open(codespell_path(), encoding="utf-8") as fh:
        for line in fh:
            wrong, _, right = line.rstrip("\n").partition("->")
            rights = [r.strip() for r in right.split(",") if r.strip()]
            if len(rights) == 1 and wrong.isalpha() and rights[0].isalpha():
                table.setdefault(rights[0].lower(), []).append(wrong.lower())
    return {w: tuple(sorted(set(m))) for w, m in table.items()}


@perturbations.register("misspelling")
class Misspelling(_WordEdit):
    """Replace a word by one of its real misspellings (codespell dictionary; case kept)."""

    vectorised = staticmethod(vector.misspelling)

    def one(self, word: str, u: list[float]) -> str:
        parts = split_word(word)
        alts = misspellings_table().get(parts[1].lower(), ()) if parts else ()
        if not alts:
            return word
        new = alts[min(int(u[0] * len(alts)), len(alts) - 1)]
        return parts[0] + match_case(new, parts[1]) + parts[2]  # type: ignore[index]
