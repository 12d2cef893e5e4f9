"""RigorLLM-style moderation guardrail (S43; Yuan et al., "RigorLLM: Resilient Guardrails for Large
Language Models against Undesired Content", ICML 2024): a k-NN over sentence embeddings of the
(augmented) training data, fused with a language-model score.

Components (each a text classifier with ``logits(list[str]) -> [B, 2]``, classes ``[ok, flagged]``;
usable alone through ``component``):

* ``knn`` -- all-MiniLM-L6-v2 embeddings (L2-normalised, :class:`~robustlab.models.rankers.dense.
  DenseRanker`) of the training texts plus perturbed copies of them (the augmentation: registered
  text perturbations, ``typo`` and ``synonym`` by default, in place of the paper's Langevin-dynamics
  augmentation); ``p_knn(flagged | x)`` is the share of flagged texts among the ``k`` nearest
  (cosine) bank entries. White-box through a differentiable surrogate
  (:meth:`KNNScorer.soft_probs`: a softmax over the top-``k`` similarities at temperature ``tau``).
* ``lm`` -- class-conditional unigram language models of the same (augmented) data (multinomial
  naive Bayes over lowercase alphabetic words, add-``lm_alpha`` smoothing); its score is the
  length-normalised log-likelihood ratio ``f(x) = mean_w [log p(w|flagged) - log p(w|ok)]`` over the
  known words, calibrated by a fitted 1-D logistic regression ``p_lm = sigmoid(a f + b)``. It stands
  in for the paper's LLM (LlamaGuard) score: a query-only (no gradient) language-model score of a
  different family than the k-NN; see docs/guardrail.md for why not SmolLM2.
* ``fused`` -- ``p = alpha * p_knn + (1 - alpha) * p_lm`` (the paper's weighted average of the
  two probabilities); ``logits = log([1 - p, p])``.

A guardrail may carry a ``safe_suffix`` (the defence of :mod:`robustlab.defenses.safe_suffix`): a
text appended to every input before scoring, so an attacker's suffix sits before it.

Example::

    g = models.create("guardrail", {"component": "fused"})          # SpamAssassin, 200 train
    g.logits(["WIN a FREE prize now, click here"]).softmax(1)[:, 1]  # p(spam)
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Capabilities, Domain, Positive, PositiveInt, Rate
from robustlab.models.text_embedding import check_texts

WORDS = re.compile(r"[a-z]+")
COMPONENTS = ("fused", "knn", "lm")
_EPS = 1e-6


def augment(texts: list[str], y: torch.Tensor, ids: torch.Tensor,
            augmentations: Sequence[tuple[str, float]], seed: int) -> tuple[list[str], torch.Tensor]:  # fmt: skip
    """The texts plus one perturbed copy per ``(perturbation, severity)`` (labels copied)."""
    out, labels = list(texts), [y]
    for j, (name, sev) in enumerate(augmentations):
        p = perturbations.create(name)
        if getattr(p, "modality", "") != "text":
            raise ConfigError(f"guardrail augmentation {name!r} is not a text perturbation")
        rng = ExampleRNG.from_seed(seed, ids).fork(f"guardrail-augment-{j}")
        out += p(list(texts), float(sev), rng)
        labels.append(y)
    return out, torch.cat(labels)


class KNNScorer:
    """k-NN over L2-normalised sentence embeddings of a labelled bank (binary labels)."""

    def __init__(self, encoder: Any, bank: torch.Tensor, labels: torch.Tensor, k: int,
                 tau: float) -> None:  # fmt: skip
        if not 1 <= k <= len(labels):
            raise ConfigError(
                f"guardrail k must lie in [1, {len(labels)}] (the bank size), got {k}"
            )
        self.encoder, self.bank, self.labels = encoder, bank.float(), labels.float()
        self.k, self.tau = k, tau
        self.texts: list[str] = []

    def probs_from_embeddings(self, emb: torch.Tensor) -> torch.Tensor:
        """``p(flagged)`` ``[B]``: share of flagged entries among the k most similar bank rows."""
        idx = (emb.float() @ self.bank.T).topk(self.k, dim=1).indices
        return self.labels[idx].mean(1).double()

    def soft_probs(self, emb: torch.Tensor) -> torch.Tensor:
        """Differentiable surrogate of :meth:`probs_from_embeddings`: softmax(sim / tau) weights
        over the top-k similarities (gradients flow through the selected similarities)."""
        sim, idx = (emb.float() @ self.bank.T).topk(self.k, dim=1)
        return ((sim / self.tau).softmax(1) * self.labels[idx]).sum(1).double()

    def probs(self, texts: list[str]) -> torch.Tensor:
        return self.probs_from_embeddings(self.encoder.query_matrix(texts))


class UnigramLMScorer:
    """Class-conditional unigram LMs (multinomial NB), length-normalised LLR, logistic calibration."""

    def __init__(self, texts: list[str], y: torch.Tensor, alpha: float = 1.0) -> None:
        counts = [Counter(), Counter()]  # type: ignore[var-annotated]
        for t, c in zip(texts, y.tolist(), strict=True):
            counts[int(c)].update(WORDS.findall(t.lower()))
        self.vocab = {w: i for i, w in enumerate(sorted(set(counts[0]) | set(counts[1])))}
        n = torch.zeros(2, len(self.vocab), dtype=torch.float64)
        for c in (0, 1):
            if counts[c]:
                ids = torch.tensor([self.vocab[w] for w in counts[c]])
                n[c, ids] = torch.tensor(list(counts[c].values()), dtype=torch.float64)
        logp = (n + alpha).log() - (n.sum(1, keepdim=True) + alpha * len(self.vocab)).log()
        self.llr = logp[1] - logp[0]  # [V]: log p(w|flagged) - log p(w|ok)
        self.a, self.b = self._calibrate(self.feature(texts), y.double())

    def feature(self, texts: list[str]) -> torch.Tensor:
        """Mean log-likelihood ratio over each text's known words (0 when it has none) ``[B]``."""
        ids, owner = [], []
        for i, t in enumerate(texts):
            known = [self.vocab[w] for w in WORDS.findall(t.lower()) if w in self.vocab]
            ids += known
            owner += [i] * len(known)
        own = torch.tensor(owner, dtype=torch.int64)
        s = torch.zeros(len(texts), dtype=torch.float64).index_add_(0, own, self.llr[ids])
        cnt = torch.bincount(own, minlength=len(texts)).double()
        return s / cnt.clamp_min(1)

    @staticmethod
    def _calibrate(f: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Fit ``sigmoid(a f + b)`` by Newton's method on the logistic loss (tiny ridge)."""
        w = torch.zeros(2, dtype=torch.float64)
        x = torch.stack([f, torch.ones_like(f)], 1)
        for _ in range(50):
            p = torch.sigmoid(x @ w)
            g = x.T @ (p - y) + 1e-3 * w
            h = (x * (p * (1 - p))[:, None]).T @ x + 1e-3 * torch.eye(2, dtype=torch.float64)
            step = torch.linalg.solve(h, g)
            w -= step
            if float(step.abs().max()) < 1e-10:
                break
        return float(w[0]), float(w[1])

    def probs(self, texts: list[str]) -> torch.Tensor:
        return torch.sigmoid(self.a * self.feature(texts) + self.b)


class Guardrail:
    """The fused guardrail or one of its components; ``logits`` are log-probabilities."""

    def __init__(self, knn: KNNScorer, lm: UnigramLMScorer, component: str = "fused",
                 alpha: float = 0.5, safe_suffix: str = "", classes: list[str] | None = None,
                 name: str = "guardrail") -> None:  # fmt: skip
        if component not in COMPONENTS:
            raise ConfigError(f"guardrail component must be one of {COMPONENTS}, got {component!r}")
        if not 0 <= alpha <= 1:
            raise ConfigError(f"guardrail alpha must lie in [0, 1], got {alpha}")
        self.knn, self.lm, self.component, self.alpha = knn, lm, component, alpha
        self.safe_suffix, self.classes, self.name = safe_suffix, classes, name
        self.num_classes = 2
        self.domain = Domain(-float("inf"), float("inf"))
        # white-box = the MiniLM encoder's input-embedding gradient through the k-NN surrogate
        self.capabilities = Capabilities(grad=component != "lm", batch=True, probs_only=False)

    @property
    def encoder(self) -> Any:
        return self.knn.encoder

    def with_safe_suffix(self, suffix: str) -> Guardrail:
        """The same guardrail appending ``suffix`` to every input (the safe-suffix defence)."""
        return Guardrail(self.knn, self.lm, self.component, self.alpha, suffix, self.classes,
                         self.name)  # fmt: skip

    def inputs(self, texts: Sequence[str]) -> list[str]:
        """What the components score: each text with the safe suffix (if any) appended."""
        texts = check_texts(texts, self.name)
        return [f"{t} {self.safe_suffix}" for t in texts] if self.safe_suffix else texts

    def combine(self, p_knn: torch.Tensor | None, p_lm: torch.Tensor | None) -> torch.Tensor:
        """``p(flagged)`` of this component from its parts' probabilities."""
        if self.component == "knn":
            return p_knn  # type: ignore[return-value]
        if self.component == "lm":
            return p_lm  # type: ignore[return-value]
        return self.alpha * p_knn + (1 - self.alpha) * p_lm  # type: ignore[operator]

    def flag_probs(self, texts: Sequence[str]) -> torch.Tensor:
        """``p(flagged)`` ``[B]`` (float64)."""
        x = self.inputs(texts)
        if not x:
            return torch.zeros(0, dtype=torch.float64)
        with torch.no_grad():
            p_knn = self.knn.probs(x) if self.component != "lm" else None
            p_lm = self.lm.probs(x) if self.component != "knn" else None
        return self.combine(p_knn, p_lm)

    @staticmethod
    def to_logits(p: torch.Tensor) -> torch.Tensor:
        p = p.clamp(_EPS, 1 - _EPS)
        return torch.stack([(1 - p).log(), p.log()], 1)

    def logits(self, x: Sequence[str]) -> torch.Tensor:
        """``[B, 2]`` log-probabilities of (ok, flagged)."""
        return self.to_logits(self.flag_probs(x)).float()

    def surrogate_logits(self, emb: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Differentiable stand-in of :meth:`logits` in the MiniLM embeddings ``emb`` of the full
        inputs ``texts`` (safe suffix included): the soft k-NN, fused with the LM probability of
        ``texts`` held constant (the LM part has no gradient)."""
        if self.component == "lm":
            raise ConfigError("the guardrail's lm component has no gradient (query-only)")
        p_lm = self.lm.probs(list(texts)) if self.component == "fused" else None
        return self.to_logits(self.combine(self.knn.soft_probs(emb), p_lm))

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.encoder.fingerprint().encode())
        h.update(self.knn.bank.numpy().tobytes() + self.knn.labels.numpy().tobytes())
        h.update(repr((self.knn.k, self.knn.tau, self.lm.a, self.lm.b, self.component,
                       self.alpha, self.safe_suffix)).encode())  # fmt: skip
        return h.hexdigest()[:16]


def _augmentations(augment_with: Any) -> list[tuple[str, float]]:
    out = []
    for a in augment_with or []:
        if not (isinstance(a, list | tuple) and len(a) == 2 and isinstance(a[0], str)):
            raise ConfigError(f"guardrail augmentations are [perturbation, severity], got {a!r}")
        out.append((a[0], float(a[1])))
    return out


def build_parts(dataset: str, data_params: dict[str, Any] | None, augment_with: Any, k: int,
                tau: float, lm_alpha: float, max_length: int, seed: int
                ) -> tuple[KNNScorer, UnigramLMScorer, list[str]]:  # fmt: skip
    """The k-NN and LM scorers trained on the augmented ``train`` split, and its classes."""
    from robustlab.models.text_zoo import training_data

    data = training_data(dataset, data_params, 1.0, None, "guardrail")
    assert isinstance(data.y, torch.Tensor) and data.ids is not None
    if len(data.classes or []) != 2:
        raise ConfigError(f"guardrail needs a two-class dataset (ok, flagged), {dataset!r} is not")
    texts, y = augment(list(data.x), data.y, data.ids, _augmentations(augment_with), seed)
    encoder = models.create("minilm", {"max_length": max_length})
    bank = encoder.doc_matrix(texts).float()  # cached on disk per corpus
    knn = KNNScorer(encoder, bank, y, k, tau)
    knn.texts = texts  # the augmented training texts of the bank (for inspection)
    return knn, UnigramLMScorer(texts, y, lm_alpha), data.classes


@models.register("guardrail")
def guardrail(
    component: str = "fused",
    dataset: str = "spam-assassin",
    data_params: dict[str, Any] | None = None,
    augment_with: list[Any] | None = None,
    k: PositiveInt = 16,
    alpha: Rate = 0.5,
    tau: Positive = 0.05,
    lm_alpha: Positive = 1.0,
    max_length: PositiveInt = 256,
    safe_suffix: str = "",
    seed: int = 0,
) -> Guardrail:
    """RigorLLM-style guardrail: k-NN over MiniLM embeddings of augmented data + unigram-LM score.

    ``data_params`` default to ``{"limit": 200, "max_words": 48}`` (texts short enough that an
    appended suffix stays inside MiniLM's ``max_length``); ``augment_with`` to
    ``[["typo", 0.1], ["synonym", 0.2]]``.
    """
    if component not in COMPONENTS:
        raise ConfigError(f"guardrail component must be one of {COMPONENTS}, got {component!r}")
    params = {"limit": 200, "max_words": 48} if data_params is None else data_params
    aug = [["typo", 0.1], ["synonym", 0.2]] if augment_with is None else augment_with
    knn, lm, classes = _parts(dataset, params, aug, k, tau, lm_alpha, max_length, seed)
    return Guardrail(knn, lm, component, alpha, safe_suffix, classes, f"guardrail-{component}")


_PARTS: dict[str, tuple[KNNScorer, UnigramLMScorer, list[str]]] = {}


def _parts(dataset: str, params: dict[str, Any], aug: Any, k: int, tau: float, lm_alpha: float,
           max_length: int, seed: int) -> tuple[KNNScorer, UnigramLMScorer, list[str]]:  # fmt: skip
    """:func:`build_parts`, shared by the components of one configuration in a process."""
    import json

    key = json.dumps([dataset, params, aug, k, tau, lm_alpha, max_length, seed], sort_keys=True)
    if key not in _PARTS:
        _PARTS[key] = build_parts(dataset, params, aug, k, tau, lm_alpha, max_length, seed)
    return _PARTS[key]


@models.register("guardrail-safe-suffix")
def guardrail_safe_suffix(
    component: str = "fused",
    guard_params: dict[str, Any] | None = None,
    n_fit: PositiveInt = 8,
    n_tokens: PositiveInt = 8,
    rounds: PositiveInt = 2,
    iterations: PositiveInt = 8,
    candidates: PositiveInt = 16,
    attack_iterations: PositiveInt = 4,
    seed: int = 0,
) -> Guardrail:
    """The guardrail with a safe suffix (:mod:`robustlab.defenses.safe_suffix`) fitted on ``n_fit``
    flagged and ``n_fit`` ok texts of its training split; the suffix is cached on disk (keyed by
    the guardrail's fingerprint and these parameters). ``undefended`` is the plain guardrail."""
    import json

    from robustlab.core.paths import cache_dir, write_text_atomic
    from robustlab.defenses.safe_suffix import SafeSuffixConfig, fit_safe_suffix
    from robustlab.models.text_zoo import training_data

    guard = guardrail(component, **(guard_params or {}))
    gp = (guard_params or {}).get("data_params") or {"limit": 200, "max_words": 48}
    data = training_data((guard_params or {}).get("dataset", "spam-assassin"), gp, 1.0, None,
                         "guardrail-safe-suffix")  # fmt: skip
    assert isinstance(data.y, torch.Tensor)
    pick = [i for c in (1, 0) for i in torch.nonzero(data.y == c).flatten().tolist()[:n_fit]]
    cfg = SafeSuffixConfig(n_tokens, rounds, iterations, candidates, 64, 8, attack_iterations, 16,
                           "the", seed)  # fmt: skip
    key = hashlib.sha256(json.dumps([guard.fingerprint(), pick, repr(cfg)]).encode()).hexdigest()
    path = cache_dir() / "models" / f"safe-suffix-{key[:20]}.json"
    if path.is_file():
        suffix = json.loads(path.read_text())["suffix"]
    else:
        suffix = fit_safe_suffix(guard, [data.x[i] for i in pick], data.y[pick], cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"suffix": suffix}))
    out = guard.with_safe_suffix(suffix)
    out.undefended = guard  # type: ignore[attr-defined]
    out.defence = f"safe suffix {suffix!r} (RigorLLM minimax, {rounds} rounds)"  # type: ignore[attr-defined]
    return out
