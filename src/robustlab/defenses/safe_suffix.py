"""Safe-suffix defence of a guardrail (S43, RigorLLM: "optimizing a safe suffix for inputs via
minimax optimization"; Yuan et al., ICML 2024).

The defended guardrail appends a fixed suffix ``s`` to every input before scoring, so an attacker's
suffix ``a`` sits before it: ``f(x + a + s)``. ``s`` is found by the same greedy coordinate search
as the :class:`~robustlab.attacks.text.gcg.GCG` attack, with the opposite objective and one suffix
shared by all texts, in alternating rounds (a minimax)::

    for round in 1..rounds:
        a_i = GCG attack on f(. + s) for each flagged fitting text x_i      (inner max)
        s   = argmin_s mean_i -log p(y_i | x_i + a_i + s)  over flagged x_i + a_i and ok texts,
              by ``iterations`` coordinate steps from the current s        (outer min)

Keeping ok texts in the outer objective keeps the verdict on them (no blanket flagging).

Threat model of the evaluation: the attacker knows the defence. The adaptive attack runs GCG on
the defended model itself (its suffix goes before ``s``; gradients flow through ``s``'s tokens);
the non-adaptive one transfers suffixes found on the undefended guardrail. Both are reported in
docs/guardrail.md.

Example::

    guard = models.create("guardrail")
    safe = fit_safe_suffix(guard, texts, labels, SafeSuffixConfig(rounds=2))
    defended = guard.with_safe_suffix(safe)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from robustlab.attacks.text.common import Scorer
from robustlab.attacks.text.gcg import GCG, Problem, SearchConfig, suffix_search, suffix_vocab
from robustlab.core.errors import ConfigError
from robustlab.core.rng import ExampleRNG


@dataclass
class SafeSuffixConfig:
    """Hyperparameters of :func:`fit_safe_suffix` (the inner attack uses ``attack_*``)."""

    n_tokens: int = 8
    rounds: int = 2
    iterations: int = 8
    candidates: int = 16
    topk: int = 64
    attack_tokens: int = 8
    attack_iterations: int = 4
    attack_candidates: int = 16
    init: str = "the"
    seed: int = 0


def fit_safe_suffix(guard: Any, texts: list[str], y: torch.Tensor,
                    cfg: SafeSuffixConfig | None = None) -> str:  # fmt: skip
    """The safe suffix (words joined by spaces) of ``guard`` fitted on ``texts`` / ``y``."""
    cfg = cfg or SafeSuffixConfig()
    if not texts or len(texts) != len(y):
        raise ConfigError("fit_safe_suffix needs texts and one label per text")
    if cfg.rounds < 1 or cfg.n_tokens < 1:
        raise ConfigError(f"safe suffix needs rounds >= 1 and n_tokens >= 1, got {cfg}")
    ids, words = suffix_vocab(str(guard.encoder.path))
    if cfg.init not in words:
        raise ConfigError(f"safe-suffix init {cfg.init!r} is not a suffix-vocabulary word")
    y = y.long()
    cur = torch.full((1, cfg.n_tokens), words.index(cfg.init), dtype=torch.int64)
    flagged = torch.nonzero(y == 1).flatten().tolist()
    search = SearchConfig(cfg.iterations, cfg.candidates, cfg.topk, None, stop_when_fooled=False)
    attack = GCG(cfg.attack_tokens, cfg.attack_iterations, cfg.attack_candidates, cfg.topk)
    for r in range(cfg.rounds):
        safe = " ".join(words[t] for t in cur[0].tolist())
        defended = guard.with_safe_suffix(safe)
        rng = ExampleRNG.from_seed(cfg.seed, torch.tensor(flagged)).fork(f"safe-inner-{r}")
        adv = attack(defended, [texts[i] for i in flagged], y[flagged], 1.0, rng=rng).x_adv
        fit_x = list(texts)
        for i, a in zip(flagged, adv, strict=True):
            fit_x[i] = a  # flagged texts carry the attacker's suffix, ok texts stay clean
        p = Problem(guard.with_safe_suffix(""), fit_x, y, torch.zeros(len(y), dtype=torch.int64),
                    torch.tensor([cfg.n_tokens]), -1.0, ids, words)  # fmt: skip
        u = ExampleRNG.from_seed(cfg.seed, torch.tensor([r])).uniform(
            cfg.iterations, cfg.candidates, 2, dtype=torch.float64
        )
        cur, _, _ = suffix_search(p, cur, search, u, Scorer(p.model, y, None, 256))
    return " ".join(words[t] for t in cur[0].tolist())
