"""Vectorised word edits: the picked words of a whole batch edited in a few numpy passes.

The scalar edits (:func:`~robustlab.perturbations.text.words.typo_word`,
:func:`~robustlab.perturbations.text.words.split_word` and the ``one`` methods of the character
edits) are the specification. :class:`Words` computes the same strings for all picked words of a
batch at once: the words are joined by spaces (a word never contains whitespace) into one array of
code points; per-character flags come from a lookup table (Python's own ``str`` predicates, computed
once per distinct character); the ``(\\W*)(\\w+)(\\W*)`` split of :func:`split_word` is "exactly one
run of word characters"; every edit is a few substitutions, deletions and insertions at positions
computed from the same uniforms with the same float64 arithmetic (``min(int(u * n), n - 1)``), and
one decode gives the edited words back. ``tests/test_text_vectorised.py`` checks the outputs equal
the scalar edits on BBC News and tweets for several seeds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

WORD, KILL, UPPER = 1, 2, 4  # \w (str.isalnum or "_"); lower/title case (no all-caps); upper case
_ASCII = 128


def _nb_tables() -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    from robustlab.perturbations.text.words import NEIGHBOURS

    keys = sorted(NEIGHBOURS)
    ids = {c: k + 1 for k, c in enumerate(keys)}  # 0: no neighbours
    width = max(len(v) for v in NEIGHBOURS.values())
    chars = np.zeros((len(keys) + 1, width), dtype=np.uint32)
    lens = np.zeros(len(keys) + 1, dtype=np.int64)
    for c, k in ids.items():
        nb = NEIGHBOURS[c]
        chars[k, : len(nb)] = [ord(ch) for ch in nb]
        lens[k] = len(nb)
    return ids, chars, lens


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids, nb_chars, nb_lens = _nb_tables()
    flags = np.zeros(_ASCII, dtype=np.uint8)
    nb = np.zeros(_ASCII, dtype=np.int64)
    for c in range(_ASCII):
        flags[c], nb[c] = _char_info(c, ids)
    return ids, flags, nb, nb_chars, nb_lens


def _char_info(c: int, ids: dict[str, int]) -> tuple[int, int]:
    """Flags of one character and the id of its keyboard neighbours (``typo_word``'s lookup)."""
    ch = chr(c)
    f = WORD if ch.isalnum() or ch == "_" else 0
    # str.isupper() of a longer string fails on any lower- or title-case character; "A" + ch is
    # upper exactly when ch is neither; a single character is upper when it is upper case
    f |= 0 if ("A" + ch).isupper() else KILL
    f |= UPPER if ch.isupper() else 0
    return f, ids.get(ch.lower(), 0)


@functools.lru_cache(maxsize=1 << 14)
def _char_info_cached(c: int) -> tuple[int, int]:
    return _char_info(c, _tables()[0])


class Words:
    """A list of words (no whitespace inside) as one code-point array with their
    :func:`~robustlab.perturbations.text.words.split_word` parts and per-character flags.

    ``valid[k]``: word ``k`` has exactly one run of word characters (``split_word`` is not None);
    its core (the middle part) is ``a[cs[k]:ce[k]]``, of length ``n[k]``.
    """

    def __init__(self, words: Sequence[str]) -> None:
        _, flag_table, _, self.nb_chars, self.nb_lens = _tables()
        self.words = words
        self.text = " ".join(words)
        # strict UTF-32: a lone surrogate raises UnicodeEncodeError (callers fall back to scalar)
        self.a = np.frombuffer(self.text.encode("utf-32-le"), dtype=np.uint32)
        k = len(words)
        lens = np.fromiter(map(len, words), dtype=np.int64, count=k)
        self.starts = np.cumsum(lens + 1) - lens - 1
        self.ends = self.starts + lens
        small = np.minimum(self.a, _ASCII - 1)
        self.flags = flag_table[small]
        self._high = np.flatnonzero(self.a >= _ASCII)
        if self._high.size:
            cps, inv = np.unique(self.a[self._high], return_inverse=True)
            self._info = np.array([_char_info_cached(int(c)) for c in cps], dtype=np.int64)[inv]
            self.flags[self._high] = self._info[:, 0]
        self._small = small
        w = (self.flags & WORD).view(bool)
        # runs of word characters: the separating spaces are not word characters, so the edges
        # of the 0/1 sequence alternate between run starts and run ends
        pad = np.zeros(len(w) + 2, dtype=np.int8)
        pad[1:-1] = w
        edge = np.flatnonzero(np.diff(pad))
        run_start, run_end = edge[0::2], edge[1::2]
        owner = np.searchsorted(self.starts, run_start, side="right") - 1
        self.valid = np.bincount(owner, minlength=k) == 1
        single = self.valid[owner]
        self.cs = np.zeros(k, dtype=np.int64)
        self.ce = np.zeros(k, dtype=np.int64)
        self.cs[owner[single]] = run_start[single]
        self.ce[owner[single]] = run_end[single]
        self.n = self.ce - self.cs
        self.w = w

    @property
    def nb(self) -> np.ndarray:
        """Per character: the id of its keyboard neighbours (0: none), as ``typo_word`` looks up."""
        nb = _tables()[2][self._small]
        if self._high.size:
            nb[self._high] = self._info[:, 1]
        return nb

    def core_isupper(self) -> np.ndarray:
        """``core.isupper()`` per word, for cores of 2+ characters (no lower/title case, some upper)."""
        kill = np.concatenate(([0], np.cumsum((self.flags & KILL) != 0)))
        up = np.concatenate(([0], np.cumsum((self.flags & UPPER) != 0)))
        return (kill[self.ce] == kill[self.cs]) & (up[self.ce] > up[self.cs])

    def owner_of_chars(self) -> np.ndarray:
        """Word index of every character (separators belong to the word before them)."""
        out = np.zeros(len(self.a), dtype=np.int64)
        if len(self.starts) > 1:
            out[self.starts[1:]] = 1
        return np.cumsum(out)

    def apply(
        self,
        sub_at: np.ndarray,
        sub: np.ndarray,
        drop: np.ndarray,
        ins_at: np.ndarray,
        ins: np.ndarray,
    ) -> list[str]:
        """The words after setting ``a[sub_at] = sub``, deleting ``a[drop]`` and inserting ``ins``
        before positions ``ins_at`` (in order at equal positions); all positions are original."""
        a = self.a.copy()
        a[sub_at] = sub
        if drop.size or ins_at.size:
            keep = np.ones(len(a), dtype=bool)
            keep[drop] = False
            if ins_at.size:
                a = np.insert(a, ins_at, ins.astype(np.uint32))
                keep = np.insert(keep, ins_at, True)
            a = a[keep]
        return a.tobytes().decode("utf-32-le").split(" ")


def pick(u: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``min(int(u * n), n - 1)`` elementwise (float64 ``u`` in [0, 1), as the scalar edits)."""
    return np.minimum((u * n).astype(np.int64), n - 1)


_EMPTY = np.zeros(0, dtype=np.int64)


def char_swap(ws: Words, u: np.ndarray) -> list[str]:
    """:class:`~robustlab.perturbations.text.chars.CharSwap` on every word (``u``: ``[k, 2]``)."""
    ok = ws.valid & (ws.n >= 3)
    n, cs = ws.n[ok], ws.cs[ok]
    g = cs + 1 + np.minimum((u[ok, 0] * (n - 2)).astype(np.int64), n - 3)
    at = np.concatenate((g, g + 1))
    return ws.apply(at, ws.a[np.concatenate((g + 1, g))], _EMPTY, _EMPTY, _EMPTY)


def char_delete(ws: Words, u: np.ndarray) -> list[str]:
    """:class:`~robustlab.perturbations.text.chars.CharDelete` on every word."""
    ok = ws.valid & (ws.n >= 3)
    g = ws.cs[ok] + pick(u[ok, 0], ws.n[ok])
    return ws.apply(_EMPTY, _EMPTY, g, _EMPTY, _EMPTY)


def char_insert(ws: Words, u: np.ndarray) -> list[str]:
    """:class:`~robustlab.perturbations.text.chars.CharInsert` on every word."""
    ok = ws.valid  # cores have at least one character
    n = ws.n[ok]
    at = ws.cs[ok] + np.minimum((u[ok, 0] * (n + 1)).astype(np.int64), n)
    c = ord("a") + np.minimum((u[ok, 1] * 26).astype(np.int64), 25)
    upper = ws.core_isupper()[ok] & (n > 1)
    return ws.apply(_EMPTY, _EMPTY, _EMPTY, at, c - 32 * upper)


@functools.lru_cache(maxsize=1)
def _ocr_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pattern ids of single characters ``[128]`` and of pairs ``[128 * 128]`` (-1: none), and per
    pattern: its length, number of replacements, and replacements as code points ``[P, R, 2]``."""
    from robustlab.perturbations.text.chars import OCR_CONFUSIONS

    pats = list(OCR_CONFUSIONS)
    single = np.full(_ASCII, -1, dtype=np.int64)
    pair = np.full(_ASCII * _ASCII, -1, dtype=np.int64)
    width = max(len(v) for v in OCR_CONFUSIONS.values())
    plen = np.zeros(len(pats), dtype=np.int64)
    nsub = np.zeros(len(pats), dtype=np.int64)
    subs = np.zeros((len(pats), width, 2), dtype=np.int64)  # code points; 0: none
    for k, p in enumerate(pats):
        if len(p) == 1:
            single[ord(p)] = k
        else:
            pair[ord(p[0]) * _ASCII + ord(p[1])] = k
        plen[k], nsub[k] = len(p), len(OCR_CONFUSIONS[p])
        for j, r in enumerate(OCR_CONFUSIONS[p]):
            subs[k, j, : len(r)] = [ord(ch) for ch in r]
    assert all(len(p) <= 2 and max(map(ord, p)) < _ASCII for p in pats)
    assert all(1 <= len(r) <= 2 for v in OCR_CONFUSIONS.values() for r in v)
    return single, pair, plen, nsub, subs


def ocr(ws: Words, u: np.ndarray) -> list[str]:
    """:class:`~robustlab.perturbations.text.chars.OCR` on every word.

    The confusable spans are those of the scalar regex (longest pattern first, left to right, no
    overlaps): a pair pattern starting at ``p`` is matched unless ``p`` is the second character of
    a matched pair, i.e. in a run of consecutive pair starts every other one from the run's start;
    a single-character pattern is matched where no pair starts and the character is not taken.
    """
    single, pair, plen, nsub, subs = _ocr_tables()
    a = np.minimum(ws.a, _ASCII - 1).astype(np.int64)
    incore = ws.w & ws.valid[ws.owner_of_chars()]  # a valid word's word characters are its core
    m1 = incore & (single[a] >= 0)
    m2 = np.zeros(len(a), dtype=bool)
    if len(a) > 1:
        m2[:-1] = incore[:-1] & incore[1:] & (pair[a[:-1] * _ASCII + a[1:]] >= 0)
    idx = np.arange(len(a))
    run0 = m2 & np.r_[True, ~m2[:-1]] if len(a) else m2
    start_of_run = np.maximum.accumulate(np.where(run0, idx, 0)) if len(a) else idx
    taken2 = m2 & ((idx - start_of_run) % 2 == 0)
    consumed = np.r_[False, taken2[:-1]] if len(a) else taken2
    spot = np.flatnonzero(taken2 | (m1 & ~m2 & ~consumed))
    owner = np.searchsorted(ws.starts, spot, side="right") - 1
    count = np.bincount(owner, minlength=len(ws.starts))
    first = np.cumsum(count) - count
    chosen = pick(u[:, 0], np.maximum(count, 1))  # per word: the rank of its edited span
    g = spot[(np.arange(len(spot)) - first[owner]) == chosen[owner]]
    w = np.searchsorted(ws.starts, g, side="right") - 1
    pid = np.where(taken2[g], pair[a[g] * _ASCII + a[np.minimum(g + 1, len(a) - 1)]], single[a[g]])
    r = subs[pid, pick(u[w, 1], nsub[pid])]
    two_to_one = (plen[pid] == 2) & (r[:, 1] == 0)
    one_to_two = (plen[pid] == 1) & (r[:, 1] != 0)
    both = (plen[pid] == 2) & (r[:, 1] != 0)
    sub_at = np.concatenate((g, g[both] + 1))
    sub = np.concatenate((r[:, 0], r[both, 1]))
    return ws.apply(sub_at, sub, g[two_to_one] + 1, g[one_to_two] + 1, r[one_to_two, 1])


def typo(ws: Words, u: np.ndarray) -> list[str]:
    """:func:`~robustlab.perturbations.text.words.typo_word` on every word (``u``: kind, position,
    character)."""
    ok = ws.valid & (ws.n >= 2)
    n, cs = ws.n, ws.cs
    i = pick(u[:, 1], np.maximum(n, 1))
    kind = (u[:, 0] * 4).astype(np.int64)
    swap = ok & (kind == 0) & (n > 2)
    drop = ok & (kind == 1) & (n > 3)
    rep = ok & (kind == 2)
    near = ok & ~swap & ~drop & ~rep
    gs = cs[swap] + np.maximum(1, np.minimum(i[swap], n[swap] - 2))
    gn = cs[near] + i[near]
    nb = ws.nb[gn]
    has = nb > 0
    gn, nb = gn[has], nb[has]
    c = ws.nb_chars[nb, pick(u[near][has, 2], ws.nb_lens[nb])].astype(np.int64)
    c -= 32 * ((ws.flags[gn] & UPPER) != 0)  # neighbours are a-z: upper() is -32
    gr = cs[rep] + i[rep]
    sub_at = np.concatenate((gs, gs + 1, gn))
    sub = np.concatenate((ws.a[gs + 1], ws.a[gs], c))
    return ws.apply(sub_at, sub, cs[drop] + i[drop], gr + 1, ws.a[gr])


_P = 0x100000001B3  # FNV-1a 64-bit prime (odd: invertible modulo 2**64)
_Q = 0x9E3779B97F4A7C15
_POW: list[np.ndarray] = [np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64)]


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``P**i`` and ``P**-i`` modulo 2**64 for ``i < n`` (uint64; grown and kept)."""
    if len(_POW[0]) < n:
        m = max(n, 2 * len(_POW[0]))
        for k, base in enumerate((_P, pow(_P, -1, 1 << 64))):
            steps = np.full(m, base, dtype=np.uint64)
            steps[0] = 1
            _POW[k] = np.cumprod(steps, dtype=np.uint64)  # wraps modulo 2**64
    return _POW[0][:n], _POW[1][:n]


def span_hashes(c: np.ndarray, start: np.ndarray, size: np.ndarray) -> np.ndarray:
    """A 64-bit polynomial hash of each span ``c[start:start + size]`` of code points; equal spans
    hash equal (matches must still be verified)."""
    pw, ipw = _powers(len(c) + 1)
    acc = np.zeros(len(c) + 1, dtype=np.uint64)
    np.cumsum(c.astype(np.uint64) * pw[: len(c)], out=acc[1:])
    return (acc[start + size] - acc[start]) * ipw[start] + size.astype(np.uint64) * np.uint64(_Q)


def ranges(start: np.ndarray, size: np.ndarray) -> np.ndarray:
    """The indices ``start[k] .. start[k] + size[k] - 1`` of every span, concatenated."""
    first = np.cumsum(size) - size
    return np.arange(int(size.sum())) + np.repeat(start - first, size)


@functools.lru_cache(maxsize=1)
def _misspelling_index() -> tuple[np.ndarray, ...] | tuple[list[str], ...]:
    """The codespell table as arrays: sorted key hashes and, in that order, each key's position,
    code points (start, size), number of misspellings and offset into the flat list of them."""
    from robustlab.perturbations.text.chars import misspellings_table

    table = misspellings_table()
    keys = list(table)
    size = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
    start = np.cumsum(size) - size
    chars = np.frombuffer("".join(keys).encode("utf-32-le"), dtype=np.uint32)
    h = span_hashes(chars, start, size)
    order = np.argsort(h, kind="stable")
    count = np.array([len(table[k]) for k in keys], dtype=np.int64)
    flat = [m for k in keys for m in table[k]]
    offset = np.cumsum(count) - count
    return h[order], start[order], size[order], count[order], offset[order], chars, flat


def lookup_misspellings(
    low: np.ndarray, start: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For lower-cased spans of ``low``: (found mask, number of misspellings, offset of the first
    in the flat list), by hash look-up verified character by character."""
    keys, k_start, k_size, k_count, k_offset, k_chars, _ = _misspelling_index()
    h = span_hashes(low, start, size)
    at = np.minimum(np.searchsorted(keys, h), len(keys) - 1)
    found = (keys[at] == h) & (k_size[at] == size)
    cand = np.flatnonzero(found)
    if cand.size:  # a hash collision is astronomically rare, but verify: exact as a dict look-up
        n = size[cand]
        first = np.cumsum(n) - n
        r = np.arange(int(first[-1] + n[-1])) - np.repeat(first, n)  # index within the span
        same = low[np.repeat(start[cand], n) + r] == k_chars[np.repeat(k_start[at[cand]], n) + r]
        found[cand] = np.logical_and.reduceat(same, first)
    return found, k_count[at], k_offset[at]


def misspelling(ws: Words, u: np.ndarray) -> list[str]:
    """:class:`~robustlab.perturbations.text.chars.Misspelling` on every word. Cores of ASCII
    characters are lower-cased and looked up in numpy (:func:`lookup_misspellings`), others in the
    dictionary; Python runs one assignment per replaced word (slicing only for words with
    punctuation or capitals)."""
    from robustlab.perturbations.text import match_case
    from robustlab.perturbations.text.chars import misspellings_table

    words, text, a = ws.words, ws.text, ws.a
    flat = _misspelling_index()[-1]
    wide = np.concatenate(([0], np.cumsum(a >= _ASCII)))
    ascii_core = ws.valid & (wide[ws.ce] == wide[ws.cs])
    low = a + np.uint32(32) * ((a >= 65) & (a <= 90))
    cores = np.flatnonzero(ascii_core)
    found, count, offset = lookup_misspellings(low, ws.cs[cores], ws.n[cores])
    hit, count, offset = cores[found], count[found], offset[found]
    alt = list(map(flat.__getitem__, (offset + pick(u[hit, 0], count)).tolist()))
    table = misspellings_table()
    more = []
    for w in np.flatnonzero(ws.valid & ~ascii_core).tolist():  # case mapping beyond ASCII
        alts = table.get(text[ws.cs[w] : ws.ce[w]].lower(), ())
        if alts:
            more.append(w)
            alt.append(alts[int(pick(u[w : w + 1, 0], np.array([len(alts)]))[0])])
    if more:
        hit = np.concatenate((hit, np.array(more, dtype=np.int64)))
    if not hit.size:
        return list(words)
    bare = (ws.cs == ws.starts) & (ws.ce == ws.ends)  # the word is its core
    cased = (ws.core_isupper() & (ws.n > 1)) | ((ws.flags[ws.cs] & UPPER) != 0)
    easy = (bare & ~cased)[hit]
    out = np.empty(len(words), dtype=object)
    out[:] = words
    new = np.empty(len(alt), dtype=object)
    new[:] = alt
    out[hit[easy]] = new[easy]
    hard = hit[~easy]  # punctuation around the word, or match_case changes the case
    for w, m, s, e, s0 in zip(
        hard.tolist(),
        new[~easy].tolist(),
        ws.cs[hard].tolist(),
        ws.ce[hard].tolist(),
        ws.starts[hard].tolist(),
        strict=True,
    ):
        out[w] = words[w][: s - s0] + match_case(m, text[s:e]) + words[w][e - s0 :]
    return out.tolist()
