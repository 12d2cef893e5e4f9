"""Candidate sources for the word-substitution attacks: WordNet, MiniLM neighbours, or both.

``source="wordnet"``: :func:`robustlab.attacks.text.lexicon.synonyms`. ``source="embedding"``: the
nearest neighbours of the word among MiniLM's whole-word input embeddings (the table of
:mod:`robustlab.perturbations.text.embedding`, antonyms removed), kept when they share the word's
dominant WordNet part of speech (or either is not in WordNet). ``source="both"``: WordNet synonyms
first, then neighbours.

Example::

    candidates("company", "both")     # ('companionship', ..., 'companies')
"""

from __future__ import annotations

import functools

from robustlab.attacks.text.lexicon import POS, _lemmas, stop_words, synonyms, wordnet
from robustlab.core.errors import ConfigError


def dominant_pos(word: str) -> str | None:
    """The most frequent WordNet part of speech of a lower-case word (None if not in WordNet)."""
    _, freq = wordnet()
    readings = _lemmas(word, freq, False)
    if not readings:
        return None
    return max(readings, key=lambda r: (freq[r[0]][r[1]], -readings.index(r)))[1]


def has_pos(word: str, pos: str) -> bool:
    """Whether a lower-case word has a WordNet reading of part of speech ``pos`` (or none at all:
    a word WordNet does not know is not refused)."""
    readings = _lemmas(word, wordnet()[1], False)
    return not readings or any(r[1] == pos for r in readings)


SOURCES = ("wordnet", "embedding", "both")


@functools.lru_cache(maxsize=200_000)
def candidates(
    word: str,
    source: str = "wordnet",
    pos: str = "dominant",
    max_candidates: int = 30,
    inflect: bool = True,
    min_neighbour_similarity: float = 0.5,
    senses: str = "all",
) -> tuple[str, ...]:
    """Substitutes for ``word`` from WordNet, MiniLM embedding neighbours, or both (see above).

    With a WordNet part of speech as ``pos`` (``n v a r``, from a tagger), a neighbour is kept
    only when one of its WordNet readings has that part of speech (words outside WordNet pass)."""
    if source not in SOURCES:
        raise ConfigError(f"candidates must be one of {SOURCES}, got {source!r}")
    out = (
        list(synonyms(word, pos, max_candidates, inflect, senses)) if source != "embedding" else []
    )
    w = word.lower()
    if source != "wordnet" and w.isalpha() and w not in stop_words():
        from robustlab.perturbations.text.embedding import neighbour_table

        p = dominant_pos(w) if pos == "dominant" else None
        for nb, sim in neighbour_table().get(w, []):
            q = dominant_pos(nb) if p else None
            if (
                sim >= min_neighbour_similarity
                and nb != w
                and nb not in out
                and (p is None or q is None or p == q)
                and (pos not in POS or has_pos(nb, pos))
            ):
                out.append(nb)
    return tuple(out[:max_candidates])
