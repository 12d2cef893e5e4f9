"""HotFlip (Ebrahimi et al., "HotFlip: White-Box Adversarial Examples for Text Classification",
ACL 2018): token swaps ranked by the gradient, checked exactly, kept greedily or in a beam.

Threat model: the attacker swaps at most ``k`` tokens of the text as the model tokenizes it,
``k = floor(budget * n_words)`` (and at most ``max_swaps``), each swap a different position,
special tokens never. Candidate tokens are the vocabulary entries that decode to one non-empty
word without whitespace (no special tokens, no ``##`` continuation pieces), so one swap changes at
most one whitespace-separated word and the word edit rate stays <= ``budget``.

Each iteration, per example still correctly classified (its ``beam_width`` states, token ids):

1. :meth:`~robustlab.models.hf_classifier.HFSequenceClassifier.id_gradients` gives the first-order
   loss change of every (position, token) swap;
2. the ``topk`` best swaps of each state (unswapped positions, allowed tokens) are scored exactly
   (cross-entropy of the label) in one batched forward pass of all candidates;
3. the ``beam_width`` best candidates of the example become its states, unless none raises the
   loss over the best state (a local optimum: the example stops); an example stops when a state's
   prediction flips.

The adversarial text is the original text with each swapped token's character span (tokenizer
offsets) replaced by the decoded new token, so untouched text, case and spacing stay verbatim and
text past the model's ``max_length`` is kept. Re-tokenizing that text can differ from the attacked
ids (e.g. a swap into part of a word): success is re-checked on the text; ``retokenized_same``
and ``id_success`` record the difference. ``max_queries`` (per example; one per candidate or text
scored) stops an example before an iteration it could not pay for in full. Extras: ``swaps`` (position, old id, new id) of the
search, ``prediction`` (the model's class on the final text), ``repaired`` (``constraints`` on:
the in-context check of :func:`~robustlab.attacks.text.common.result` put some swaps back; the
text is then scored again). ``constraints`` (default off: HotFlip's swaps are any vocabulary
words, not meaning-preserving substitutes) also freezes the tokens of entity and number words;
``min_similarity`` is then the repair's MiniLM threshold (without constraints it only switches on
the recorded ``similarity``). Models need ``id_gradients`` (``hf-classifier``);
others get a :class:`~robustlab.core.errors.ConfigError`.

Example::

    atk = attacks.create("hotflip", {"topk": 16, "beam_width": 2})
    res = atk(clf, texts, labels, 0.1, rng=ExampleRNG.from_seed(0, torch.arange(len(texts))))
    res.extra["swaps"][0]   # [(position, old token id, new token id), ...]
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.attacks.text import TextAttackResult
from robustlab.attacks.text.common import Scorer, Words, check_inputs, max_edits, result
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import EDIT_RATE, PositiveInt, Rate
from robustlab.perturbations.text.constraints import constraints_from, word_options


@functools.lru_cache(maxsize=8)
def _allowed(tokenizer: Any) -> tuple[torch.Tensor, tuple[str, ...]]:
    texts = tuple(tokenizer.decode([v]).strip() for v in range(len(tokenizer)))
    ok = torch.tensor([bool(t) and not any(c.isspace() for c in t) for t in texts])
    names = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    ok &= torch.tensor([not str(n).startswith("##") for n in names])
    ok[torch.tensor(tokenizer.all_special_ids, dtype=torch.int64)] = False
    return ok, texts


def allowed_tokens(tokenizer: Any) -> tuple[torch.Tensor, tuple[str, ...]]:
    """``(mask [V], strings)``: which token ids a swap may insert, and each id's decoded word."""
    return _allowed(tokenizer)


def splice(text: str, offsets: list[tuple[int, int]], swaps: list[tuple[int, int, int]],
           strings: tuple[str, ...]) -> str:  # fmt: skip
    """``text`` with the character span of each swapped position replaced by its new token's
    word (whitespace at the span's ends kept); ``swaps`` are ``(position, old, new)``."""
    out = text
    for pos, _, new in sorted(swaps, key=lambda s: -offsets[s[0]][0]):
        s, e = offsets[pos]
        span = out[s:e]
        lead = span[: len(span) - len(span.lstrip())]
        trail = span[len(span.rstrip()) :]
        out = out[:s] + lead + strings[new] + trail + out[e:]
    return out


@attacks.register("hotflip")
class HotFlip:
    """White-box token swaps ranked by HotFlip gradients, checked exactly (hf-classifier)."""

    modality = "text"
    threat = "edit"
    level_domain = EDIT_RATE  # swapped tokens / words of the text
    needs_grad = True

    def __init__(
        self,
        topk: PositiveInt = 16,
        beam_width: PositiveInt = 1,
        max_swaps: PositiveInt | None = None,
        constraints: bool | dict[str, Any] = False,
        min_similarity: Rate = 0.0,
        max_queries: PositiveInt | None = None,
        batch_size: PositiveInt = 256,
    ) -> None:
        self.topk = topk
        self.beam_width = beam_width
        self.max_swaps = max_swaps
        self.constraints = constraints
        self.min_similarity = min_similarity
        self.max_queries = max_queries
        self.batch_size = batch_size

    def cost(self, n: int) -> dict[str, int]:
        """Model passes on ``n`` examples (at most, ``max_swaps`` or 10 swaps each)."""
        k = self.max_swaps or 10
        return {"forward": n * (2 + k * self.beam_width * self.topk),
                "backward": n * k * self.beam_width}  # fmt: skip

    def __call__(
        self, model: Any, x: list[str], y: torch.Tensor, budget: float, *, rng: ExampleRNG
    ) -> TextAttackResult:
        y = check_inputs(model, x, y, budget, "hotflip")
        if not hasattr(model, "id_gradients") or not hasattr(model, "tokenizer"):
            raise ConfigError(
                f"hotflip needs token gradients (id_gradients, e.g. hf-classifier); "
                f"{type(model).__name__} has none"
            )
        tok = model.tokenizer
        if not getattr(tok, "is_fast", False):
            raise ConfigError("hotflip needs a fast tokenizer (character offsets of tokens)")
        cfg = constraints_from(self.constraints)
        n = len(x)
        x = list(x)
        scorer = Scorer(model, y, self.max_queries, self.batch_size)
        if n == 0:
            return TextAttackResult([], torch.zeros(0, dtype=torch.bool),
                                    torch.zeros(0, dtype=torch.int64),
                                    {"swaps": [], "retokenized_same": [], "id_success": [],
                                     "prediction": [], "repaired": []})  # fmt: skip
        clean_wrong = scorer.probs(x, torch.arange(n)).argmax(1) != y
        enc = tok(x, truncation=True, max_length=model.max_length, padding=True,
                  return_tensors="pt", return_offsets_mapping=True)  # fmt: skip
        ids0, mask = enc["input_ids"], enc["attention_mask"]
        offsets = enc["offset_mapping"].tolist()
        ok_tok, strings = allowed_tokens(tok)
        frozen = self._frozen(x, ids0, mask, offsets, cfg)
        cap = max_edits([Words(t) for t in x], budget)
        if self.max_swaps is not None:
            cap = cap.clamp_max(self.max_swaps)
        cap[clean_wrong] = 0
        ids, swaps, id_fooled = self._search(model, ids0, mask, y, cap, frozen, ok_tok, scorer)
        sw = [[(int(p), int(ids0[i, p]), int(ids[i, p])) for p in swaps[i]] for i in range(n)]
        adv = [splice(x[i], [tuple(o) for o in offsets[i]], sw[i], strings) if sw[i] else x[i]
               for i in range(n)]  # fmt: skip
        changed = [i for i in range(n) if sw[i]]
        success = clean_wrong.clone()
        if changed:
            own = torch.tensor(changed, dtype=torch.int64)
            probs = scorer.probs([adv[i] for i in changed], own)
            success[own] = probs.argmax(1) != y[own]
        re = tok(adv, truncation=True, max_length=model.max_length)["input_ids"]
        same = [re[i] == ids[i, : int(mask[i].sum())].tolist() for i in range(n)]
        res = result(x, adv, success, scorer, self.min_similarity > 0, self)
        with torch.no_grad():  # the model's prediction on the final texts (cached logits)
            pred = torch.as_tensor(model.logits(res.x_adv)).argmax(1).tolist()
        repaired = [a != b for a, b in zip(res.x_adv, adv, strict=True)]  # constraints put back
        res.extra |= {"swaps": sw, "retokenized_same": same, "repaired": repaired,
                      "id_success": (id_fooled | clean_wrong).tolist(), "prediction": pred}  # fmt: skip
        return res

    def _frozen(self, x: list[str], ids: torch.Tensor, mask: torch.Tensor,
                offsets: list[list[list[int]]], cfg: Any) -> torch.Tensor:  # fmt: skip
        """``[B, L]`` positions no swap may touch: padding, special tokens (empty offsets) and,
        with constraints on, tokens inside words that must stay (entities, numbers)."""
        off = torch.tensor(offsets, dtype=torch.int64)
        frozen = (mask == 0) | (off[..., 1] <= off[..., 0])
        if cfg is None:
            return frozen
        opts = word_options(x, cfg)
        for i, t in enumerate(x):
            w = Words(t)
            starts, pos = [], len(w.seps[0])
            for word, sep in zip(w.words, w.seps[1:], strict=True):
                starts.append(pos)
                pos += len(word) + len(sep)
            st = torch.tensor(starts or [0])
            word_of = torch.searchsorted(st, off[i, :, 0].contiguous(), right=True) - 1
            keep = torch.tensor([o is None for o in opts[i]] or [True])
            frozen[i] |= keep[word_of.clamp(0, len(keep) - 1)]
        return frozen

    def _search(self, model: Any, ids0: torch.Tensor, mask: torch.Tensor, y: torch.Tensor,
                cap: torch.Tensor, frozen: torch.Tensor, ok_tok: torch.Tensor, scorer: Scorer
                ) -> tuple[torch.Tensor, list[list[int]], torch.Tensor]:  # fmt: skip
        """Beam search over swaps; returns per example the best ids ``[B, L]``, its swapped
        positions, and whether its prediction on ids flipped."""
        n, length = ids0.shape
        w = self.beam_width
        states = ids0[:, None].repeat(1, w, 1)  # [B, W, L]
        alive = torch.zeros(n, w, dtype=torch.bool)
        alive[:, 0] = True
        loss = model.loss(ids0, mask, y)  # [B] of the best state
        best = ids0.clone()
        fooled = torch.zeros(n, dtype=torch.bool)
        done = cap <= 0
        n_v = int(model.embedding_table().shape[0])
        ok_v = torch.zeros(n_v, dtype=torch.bool)
        ok_v[: min(n_v, len(ok_tok))] = ok_tok[:n_v]
        for step in range(int(cap.max()) if n else 0):
            # queries: its states' candidates now and one for the final text
            run = (~done) & (cap > step) & (scorer.left() > alive.sum(1) * self.topk)
            rows = torch.nonzero(run[:, None] & alive)  # (example, beam) pairs
            if rows.numel() == 0:
                break
            ex, bm = rows[:, 0], rows[:, 1]
            cur = states[ex, bm]  # [N, L]
            m = mask[ex]
            gains = []
            chunk = max(1, self.batch_size // 16)
            for s in range(0, len(cur), chunk):
                g = model.id_gradients(cur[s : s + chunk], m[s : s + chunk], y[ex[s : s + chunk]])
                gains.append(g.gain)
            gain = torch.cat(gains)  # [N, L, V]
            blocked = frozen[ex] | (cur != ids0[ex])  # swapped positions stay swapped
            gain = gain.masked_fill(blocked[..., None], -float("inf"))
            gain = gain.masked_fill(~ok_v[None, None], -float("inf"))
            gain = gain.masked_fill(F.one_hot(cur, gain.shape[2]).bool(), -float("inf"))
            k = min(self.topk, gain.shape[1] * gain.shape[2])
            val, flat = gain.flatten(1).topk(k, dim=1)  # [N, k]
            pos, tokv = flat // gain.shape[2], flat % gain.shape[2]
            valid = torch.isfinite(val).flatten()
            cand = cur[:, None].repeat(1, k, 1)
            cand.scatter_(2, pos[..., None], tokv[..., None])
            cand = cand.flatten(0, 1)[valid]  # [M, L]
            owner = ex.repeat_interleave(k)[valid]
            if len(cand) == 0:
                done |= run
                break
            scorer.queries += torch.bincount(owner, minlength=n)
            logits = model.id_logits(cand, mask[owner])  # every candidate in one batch
            c_loss = F.cross_entropy(logits, y[owner], reduction="none").double()
            c_fool = logits.argmax(1) != y[owner]
            # per example: the beam_width candidates of highest exact loss
            order = torch.argsort(c_loss, descending=True, stable=True)
            order = order[torch.argsort(owner[order], stable=True)]  # grouped by example
            o_sorted = owner[order]
            start = torch.searchsorted(o_sorted, o_sorted, right=False)
            rank = torch.arange(len(order)) - start
            top = order[rank < w]
            o_top, r_top = owner[top], rank[rank < w]
            first = top[r_top == 0]
            e1 = owner[first]
            better = c_loss[first] > loss[e1].double()
            done[e1[~better]] = True  # no candidate raises the loss: a local optimum
            go = e1[better]
            has = torch.zeros(n, dtype=torch.bool)
            has[owner] = True
            done |= run & ~has  # nothing left to swap
            keep = torch.isin(o_top, go)
            o_top, r_top, top = o_top[keep], r_top[keep], top[keep]
            alive[go] = False
            alive[o_top, r_top] = True
            states[o_top, r_top] = cand[top]
            best[go] = cand[first[better]]
            loss[go] = c_loss[first[better]].float()
            fooled[go] = c_fool[first[better]]
            done |= fooled
        swaps = [torch.nonzero(best[i] != ids0[i]).flatten().tolist() for i in range(n)]
        return best, swaps, fooled
