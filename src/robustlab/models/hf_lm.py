"""Local ``transformers`` language models: masked LMs (fill-mask scoring) and causal LMs
(greedy generation, next-token log-probabilities).

* :class:`HFMaskedLM` (``hf-masked-lm``): :meth:`~HFMaskedLM.score_tokens` gives, for texts with
  one mask token each, the log-probabilities of candidate tokens at the mask -- the scoring behind
  prompt-based classification (a template with a mask and a verbalizer: one token per class;
  :meth:`~HFMaskedLM.token_ids` maps words to single token ids). Long texts are cut on the
  left (a template's mask is usually near its end); a text whose mask is cut anyway is an error.
* :class:`HFCausalLM` (``hf-causal-lm``): a :class:`Generator` with greedy, batched
  ``generate(prompts, max_tokens, stop)`` (left padding; prompts cut on the left to fit
  ``max_length - max_tokens``), per-prompt token counts in ``last_usage``, and
  :meth:`~HFCausalLM.next_token_logprobs` / :meth:`~HFCausalLM.score_tokens` (the same
  interface as the masked LM, for the next token).

Results are cached per text and request (in memory). Example::

    mlm = models.create("hf-masked-lm", {"path": "/models/my-bert"})
    ids = mlm.token_ids(["sport", "business"])
    mlm.score_tokens(["Arsenal won 2-0. Topic: [MASK]."], ids)     # [1, 2] log-probabilities
    lm = models.create("hf-causal-lm", {"path": "/models/my-gpt2"})
    lm.generate(["The capital of France is"], max_tokens=8, stop=["\\n"])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models
from robustlab.core.types import NonNegativeInt, PositiveInt
from robustlab.models.hf_base import HFTextModel
from robustlab.models.text_embedding import check_texts


def _candidates(ids: Sequence[int] | torch.Tensor, vocab: int, name: str) -> torch.Tensor:
    c = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if not len(c) or c.min() < 0 or c.max() >= vocab:
        raise ConfigError(f"{name}: candidate token ids must be non-empty and in [0, {vocab})")
    return c


class _Scoring(HFTextModel):
    def token_ids(self, words: Sequence[str]) -> list[int]:
        """The single token id of each word (a :class:`ConfigError` for words of several tokens)."""
        out = []
        for w in words:
            ids = self.tokenizer(w, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ConfigError(f"{self.name}: {w!r} is {len(ids)} tokens, not one")
            out.append(ids[0])
        return out

    def _dist(self, texts: list[str]) -> list[tuple[torch.Tensor, bool, int]]:
        raise NotImplementedError

    def _logprobs(self, x: Sequence[str], cand: torch.Tensor | None) -> torch.Tensor:
        tag = None if cand is None else tuple(cand.tolist())

        def compute(texts: list[str]) -> list[tuple[torch.Tensor, bool, int]]:
            rows = self._dist(texts)
            return [(r if cand is None else r[cand], t, n) for r, t, n in rows]

        rows = self.cached(x, compute, tag)
        self.last_extra = {"truncated": [r[1] for r in rows], "n_tokens": [r[2] for r in rows]}
        width = self.net.config.vocab_size if cand is None else len(cand)
        return torch.stack([r[0] for r in rows]) if rows else torch.zeros(0, width)

    def score_tokens(self, x: Sequence[str], candidate_ids: Sequence[int] | torch.Tensor
                     ) -> torch.Tensor:  # fmt: skip
        """``[B, K]`` log-probabilities of the ``K`` candidate token ids (cached per text)."""
        return self._logprobs(x, _candidates(candidate_ids, self.net.config.vocab_size, self.name))


class HFMaskedLM(_Scoring):
    """``AutoModelForMaskedLM``: log-probabilities at the (single) mask token of each text."""

    auto = "AutoModelForMaskedLM"
    truncation_side = "left"

    def _dist(self, texts: list[str]) -> list[tuple[torch.Tensor, bool, int]]:
        enc = self.tokens(texts)
        ids = enc.inputs["input_ids"]
        is_mask = ids == self.tokenizer.mask_token_id
        count = is_mask.sum(1)
        for i, c in enumerate(count.tolist()):
            if c != 1:
                cut = " (cut by truncation)" if enc.truncated[i] and c == 0 else ""
                raise ConfigError(
                    f"{self.name}: text {i} has {c} {self.tokenizer.mask_token} tokens{cut}; "
                    "need exactly one"
                )
        with torch.no_grad():
            out = self.net(**enc.inputs).logits
        at = out[is_mask].float().log_softmax(-1).cpu()  # [B, V], one mask per row
        return list(zip(at, enc.truncated, enc.n_tokens, strict=True))

    def mask_logprobs(self, x: Sequence[str]) -> torch.Tensor:
        """``[B, V]`` log-probabilities over the vocabulary at each text's mask."""
        if self.tokenizer.mask_token_id is None:
            raise ConfigError(f"{self.name}: the tokenizer has no mask token")
        return self._logprobs(x, None)


class HFCausalLM(_Scoring):
    """``AutoModelForCausalLM``: greedy batched generation and next-token log-probabilities."""

    auto = "AutoModelForCausalLM"
    padding_side = "left"
    truncation_side = "left"

    def __init__(self, path: str, *, max_tokens: int = 32, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.max_tokens = max_tokens
        self.last_usage: list[dict[str, Any]] = []
        self.generated = 0  # completions computed (not served from the cache)

    def _dist(self, texts: list[str]) -> list[tuple[torch.Tensor, bool, int]]:
        enc = self.tokens(texts)
        mask = enc.inputs["attention_mask"]
        pos = (mask.cumsum(-1) - 1).clamp_min(0)  # positions as without the left padding
        with torch.no_grad():  # left padding: the last position is every prompt's last token
            out = self.net(**enc.inputs, position_ids=pos).logits[:, -1]
        out = out.float().log_softmax(-1).cpu()
        return list(zip(out, enc.truncated, enc.n_tokens, strict=True))

    def next_token_logprobs(self, x: Sequence[str]) -> torch.Tensor:
        """``[B, V]`` log-probabilities of the token following each prompt."""
        return self._logprobs(x, None)

    def generate(self, prompts: Sequence[str], max_tokens: int | None = None,
                 temperature: float = 0.0, stop: Sequence[str] | None = None, **kwargs: Any
                 ) -> list[str]:  # fmt: skip
        """Greedy completions (the prompt's continuation, cut at the first ``stop`` string)."""
        if kwargs:
            raise ConfigError(f"{self.name}.generate got unknown options {sorted(kwargs)}")
        n_new = self.max_tokens if max_tokens is None else max_tokens
        if n_new < 1 or temperature != 0:
            raise ConfigError(f"{self.name}: greedy only: max_tokens >= 1 and temperature 0")
        if n_new >= self.max_length:
            raise ConfigError(f"{self.name}: max_tokens must be < max_length {self.max_length}")
        stops = tuple(stop or ())
        check_texts(prompts, self.name)

        def compute(texts: list[str]) -> list[tuple[str, int, int, bool]]:
            enc = self.tokens(texts, self.max_length - n_new)
            tok = self.tokenizer
            with torch.no_grad():
                out = self.net.generate(**enc.inputs, max_new_tokens=n_new, do_sample=False,
                                        pad_token_id=tok.pad_token_id)  # fmt: skip
            new = out[:, enc.inputs["input_ids"].shape[1] :].cpu()
            counts = [new.shape[1]] * len(texts)  # tokens up to (not counting) the first eos
            if tok.eos_token_id is not None:
                counts = (new.shape[1] - ((new == tok.eos_token_id).cumsum(1) > 0).sum(1)).tolist()
            self.generated += len(texts)
            rows = []
            for i, t in enumerate(tok.batch_decode(new, skip_special_tokens=True)):
                cut = min([t.find(s) for s in stops if s and s in t], default=len(t))
                rows.append((t[:cut], min(enc.n_tokens[i], self.max_length - n_new),
                             int(counts[i]), enc.truncated[i]))  # fmt: skip
            return rows

        rows = self.cached(prompts, compute, ("generate", n_new, stops))
        self.last_usage = [{"prompt_tokens": r[1], "completion_tokens": r[2], "cost": None,
                            "truncated": r[3]} for r in rows]  # fmt: skip
        return [r[0] for r in rows]


_COMMON = "max_length", "batch_size", "cache_size", "allow_pickle", "device"


@models.register("hf-masked-lm")
def hf_masked_lm(
    path: str,
    max_length: PositiveInt | None = None,
    batch_size: PositiveInt = 16,
    cache_size: NonNegativeInt = 50_000,
    allow_pickle: bool = False,
    device: str | None = None,
) -> HFMaskedLM:
    """A local ``transformers`` masked LM (fill-mask scoring for prompt-based classification)."""
    kw = dict(zip(_COMMON, (max_length, batch_size, cache_size, allow_pickle, device), strict=True))
    return HFMaskedLM(path, name="hf-masked-lm", **kw)  # type: ignore[arg-type]


@models.register("hf-causal-lm")
def hf_causal_lm(
    path: str,
    max_tokens: PositiveInt = 32,
    max_length: PositiveInt | None = None,
    batch_size: PositiveInt = 16,
    cache_size: NonNegativeInt = 50_000,
    allow_pickle: bool = False,
    device: str | None = None,
) -> HFCausalLM:
    """A local ``transformers`` causal LM: greedy batched generation, next-token log-probs."""
    kw = dict(zip(_COMMON, (max_length, batch_size, cache_size, allow_pickle, device), strict=True))
    return HFCausalLM(path, max_tokens=max_tokens, name="hf-causal-lm", **kw)  # type: ignore[arg-type]
