"""ContraBERT (S10): contrastive robustness tuning of a code/NL encoder with augmented variants.

Liu, Wu, Xie, Chen, Ma, Liu & Liu, "ContraBERT: Enhancing Code Pre-trained Models via Contrastive
Learning", ICSE 2023. The encoder is tuned so that a function and its semantics-preserving
variants (robustlab's registered code perturbations: variable renaming, dead code, statement
permutation, function renaming) embed together, and a docstring with its function:

    L = InfoNCE(q, c) + InfoNCE(q, c') + w_pl * InfoNCE(c, c') + w_mlm * MLM(c)

over a batch of B problems, where ``q`` is the docstring prose (replaced by an NL-augmented
variant -- word deletion, word swap, synonyms, phrase-table back-translation -- with probability
``nl_rate``), ``c`` the function, ``c'`` one of its PL-augmented variants, and
``InfoNCE(a, b) = CE(a b^T / temperature, diag)`` with in-batch negatives (the other B - 1
problems' texts) on the L2-normalised mean-pooled embeddings. MLM (BERT's 15 % masking, 80/10/10)
is added where the base has an MLM head (``tunable-encoder`` on a masked LM folder); the bundled
all-MiniLM-L6-v2 is a sentence encoder without one, so there the objective is contrastive only
(``provenance["finish"]["mlm"]`` says which ran). ContraBERT continues pre-training with a
MoCo queue of negatives; here negatives are in-batch (SimCLR/SimCSE-style), the corpus is
HumanEval's training split and the tuning is short.

Variants are drawn from a pool built once in :meth:`ContraBERT.setup` (every operator at
variants ``1..variants`` for every training problem; an operator that does not apply adds
nothing; a problem with no variant is its own positive), and each batch picks one per problem from
its per-example random stream, so the step is tensor work plus tokenisation.

Data: ``humaneval-pairs`` (positions 0..N-1, label 0 = "the positive is candidate 0", MoCo's
formulation, which the loop reads as training accuracy: the share of queries whose function is
the top in-batch match). ``holdout`` must be 0 (the ranking task evaluates retrieval instead).

Example::

    ranker = robustlab.train({
        "base": {"name": "tunable-encoder"},
        "data": {"name": "humaneval-pairs"},
        "trainer": {"name": "contrabert", "params": {"train_layers": 2, "lr": 5e-5}},
        "epochs": 3, "holdout": 0,
    })
    RankingTask(k=10).evaluate(ranker, test.x, test.y)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import NonNegative, Positive, PositiveInt, Rate
from robustlab.training.trainers import Position, Step, train_mode

PL_OPERATORS = ["code_var_rename", "code_dead_code", "code_statement_swap", "func_random_name"]
NL_OPERATORS = [
    "doc_word_deletion", "doc_word_swap", "doc_synonym_substitution", "doc_back_translation",
]  # fmt: skip
AUG_SEED = "contrabert-augment"


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean cross-entropy of row i of ``a b^T / temperature`` with target i (in-batch negatives)."""
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def positive_first(sim: torch.Tensor) -> torch.Tensor:
    """``[B, B]`` similarities reordered per row as ``[s_ii, s_ij (j != i)]``: logits whose class
    0 is the positive (MoCo's labels), for the loop's training accuracy."""
    b = len(sim)
    off = sim.masked_select(~torch.eye(b, dtype=torch.bool, device=sim.device)).view(b, b - 1)
    return torch.cat([sim.diagonal()[:, None], off], dim=1)


@dataclass
class Pool:
    """Variants of each example, flattened: ``texts[start[i] : start[i] + count[i]]``."""

    texts: list[str]
    start: torch.Tensor
    count: torch.Tensor

    @classmethod
    def build(cls, per_example: list[list[str]]) -> Pool:
        count = torch.tensor([len(v) for v in per_example], dtype=torch.long)
        start = torch.cumsum(count, 0) - count
        return cls([t for v in per_example for t in v], start, count)

    def pick(self, pos: torch.Tensor, u: torch.Tensor) -> list[str]:
        """One variant per position, the ``u`` (uniform in [0, 1)) quantile of its list."""
        k = self.start[pos] + (u * self.count[pos]).long().clamp_max(self.count[pos] - 1)
        return [self.texts[i] for i in k.tolist()]


def _distinct(orig: str, cands: list[str]) -> list[str]:
    return list(dict.fromkeys(c for c in cands if c != orig))


@trainers.register("contrabert")
@dataclass(eq=False)
class ContraBERT:
    """Contrastive robustness tuning of a bi-encoder (ContraBERT, S10): see the module docstring.

    ``train_layers``: tune only the last k transformer layers (None: every weight, embeddings
    included); ``pl_weight``: weight of the function-variant term; ``mlm``: weight of the MLM term
    where the base has an MLM head; ``variants``: variants per operator in the pool.
    """

    needs_grad = False  # trains weights; no input gradients

    lr: Positive = 5e-5
    batch_size: PositiveInt = 16
    temperature: Positive = 0.05
    pl_weight: NonNegative = 1.0
    nl_rate: Rate = 0.5
    mlm: NonNegative = 1.0
    mlm_rate: Rate = 0.15
    train_layers: PositiveInt | None = 2
    variants: PositiveInt = 3
    pl_operators: list[str] = field(default_factory=lambda: list(PL_OPERATORS))
    nl_operators: list[str] = field(default_factory=lambda: list(NL_OPERATORS))

    # hooks of the loop -------------------------------------------------------------------------
    def setup(self, clf: Any, train: Any) -> None:
        """Check the data, build the variant pools, turn on gradients of the trained weights."""
        for what in ("problem", "query", "function"):
            if what not in train.meta:
                raise ConfigError(
                    f"trainer 'contrabert' needs (query, function) pairs with problems in the "
                    f"metadata, such as the dataset 'humaneval-pairs'; {train.name!r} has no {what!r}"
                )
        if not torch.equal(torch.as_tensor(train.x).cpu(), torch.arange(len(train))):
            raise ConfigError(
                "trainer 'contrabert': set holdout: 0 (held-out classification accuracy has no "
                "meaning for contrastive pairs; evaluate retrieval with the ranking task)"
            )
        if not hasattr(clf, "embed") or not hasattr(clf, "tokens"):
            raise CapabilityError(
                f"trainer 'contrabert' tunes a bi-encoder (e.g. tunable-encoder), got "
                f"{type(clf).__name__}"
            )
        self._queries, self._functions = list(train.meta["query"]), list(train.meta["function"])
        self._pl, self._nl = self._pools(train)
        for p in self.trainable(clf):
            p.requires_grad_(True)

    def trainable(self, clf: Any) -> list[torch.nn.Parameter]:
        """The last ``train_layers`` transformer layers (and an MLM head's own weights when the
        MLM term runs), or every weight."""
        if self.train_layers is None:
            return list(clf.module.parameters())
        layers = getattr(getattr(clf.net, "encoder", None), "layer", None)
        if not isinstance(layers, torch.nn.ModuleList):
            raise ConfigError(
                f"trainer 'contrabert': train_layers needs a BERT-style encoder.layer list; "
                f"{type(clf.net).__name__} has none (use train_layers: null to tune everything)"
            )
        if self.train_layers > len(layers):
            raise ConfigError(
                f"trainer 'contrabert': train_layers {self.train_layers} > the encoder's "
                f"{len(layers)} layers"
            )
        params = [p for layer in layers[-self.train_layers :] for p in layer.parameters()]
        if self._mlm_on(clf):
            base = {id(p) for p in clf.net.parameters()}
            params += [p for p in clf.module.parameters() if id(p) not in base]
        return params

    def finish(self, clf: Any, train: Any, holdout: Any) -> dict[str, Any]:
        """Gradients off again and caches dropped; what ran, for the provenance."""
        for p in clf.module.parameters():
            p.requires_grad_(False)
        if hasattr(clf, "forget"):
            clf.forget()
        return {
            "mlm": self._mlm_on(clf),
            "mlm_note": None if self._mlm_on(clf) else (
                "no MLM term: the base has no MLM head" if self.mlm > 0 else "mlm weight 0"),
            "trained_parameters": sum(p.numel() for p in self.trainable(clf)),
            **self._counts,
        }  # fmt: skip

    # the objective -----------------------------------------------------------------------------
    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        pos = (at.index if at.index is not None else x).cpu().long()
        u = rng.uniform(3)
        use_nl = u[:, 1] < self.nl_rate
        nl = self._nl.pick(pos, u[:, 2])
        q = [nl[j] if use_nl[j] else self._queries[i] for j, i in enumerate(pos.tolist())]
        c = [self._functions[i] for i in pos.tolist()]
        return self.objective(clf, q, c, self._pl.pick(pos, u[:, 0]), rng)

    def objective(
        self, clf: Any, q: list[str], c: list[str], a: list[str], rng: ExampleRNG | None = None
    ) -> Step:
        """The loss on one batch of queries, functions and function variants."""
        train_mode(clf.module)
        dev = clf.device
        tq, tc, ta = (_to(clf.tokens(t), dev) for t in (q, c, a))
        eq = clf.embed(tq["input_ids"], tq["attention_mask"])
        ec = clf.embed(tc["input_ids"], tc["attention_mask"])
        ea = clf.embed(ta["input_ids"], ta["attention_mask"])
        sim = eq @ ec.T / self.temperature
        target = torch.arange(len(q), device=dev)
        loss = F.cross_entropy(sim, target) + info_nce(eq, ea, self.temperature)
        if self.pl_weight > 0:
            loss = loss + self.pl_weight * info_nce(ec, ea, self.temperature)
        if self._mlm_on(clf) and rng is not None:
            loss = loss + self.mlm * self._mlm_loss(clf, tc, rng)
        return Step(loss, positive_first(sim.detach()))

    def _mlm_on(self, clf: Any) -> bool:
        return self.mlm > 0 and bool(getattr(clf, "has_mlm_head", False))

    def _mlm_loss(self, clf: Any, enc: dict[str, torch.Tensor], rng: ExampleRNG) -> torch.Tensor:
        """BERT's masked-LM loss on the functions: ``mlm_rate`` of the non-special tokens are
        chosen; of those 80 % become [MASK], 10 % a random token, 10 % stay."""
        ids, mask = enc["input_ids"], enc["attention_mask"]
        tok = clf.tokenizer
        special = torch.isin(ids, torch.tensor(tok.all_special_ids, device=ids.device))
        r = rng.fork("mlm")
        u = r.uniform(ids.shape[1], 2, device=ids.device)
        chosen = (u[..., 0] < self.mlm_rate) & ~special & mask.bool()
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        rand = r.integers(len(tok), ids.shape[1]).to(ids.device)
        masked = torch.where(chosen & (u[..., 1] < 0.8), tok.mask_token_id, ids)
        masked = torch.where(chosen & (u[..., 1] >= 0.8) & (u[..., 1] < 0.9), rand, masked)
        if not chosen.any():
            return torch.zeros((), device=ids.device)
        return clf.module(input_ids=masked, attention_mask=mask, labels=labels).loss

    # variant pools -----------------------------------------------------------------------------
    def _pools(self, train: Any) -> tuple[Pool, Pool]:
        from robustlab.code.search import query_of, transformed_functions
        from robustlab.core.registry import perturbations
        from robustlab.perturbations.code._base import CodeTransform

        probs = list(train.meta["problem"])
        pl: list[list[str]] = [[] for _ in probs]
        for op in self.pl_operators:
            for v in range(1, self.variants + 1):
                texts, changed = transformed_functions(probs, op, v, AUG_SEED)
                for i, (t, ch) in enumerate(zip(texts, changed, strict=True)):
                    if ch:
                        pl[i].append(t)
        nl: list[list[str]] = [[] for _ in probs]
        ids = train.ids if train.ids is not None else torch.arange(len(probs))
        for op in self.nl_operators:
            t = perturbations.create(op)
            if not isinstance(t, CodeTransform):
                raise ConfigError(f"trainer 'contrabert': {op!r} is not a code perturbation")
            for v in range(1, self.variants + 1):
                out = t(probs, v, ExampleRNG.from_seed(AUG_SEED, ids))
                for i, p in enumerate(out):
                    if not p.get("skipped"):
                        nl[i].append(query_of(p))
        funcs, queries = train.meta["function"], train.meta["query"]
        pl = [_distinct(f, v) for f, v in zip(funcs, pl, strict=True)]
        nl = [_distinct(q, v) for q, v in zip(queries, nl, strict=True)]
        self._counts = {
            "pl_variants": sum(map(len, pl)), "nl_variants": sum(map(len, nl)),
            "problems_without_pl_variant": sum(not v for v in pl),
        }  # fmt: skip
        pl = [v or [f] for f, v in zip(funcs, pl, strict=True)]  # no variant: its own positive
        nl = [v or [q] for q, v in zip(queries, nl, strict=True)]
        return Pool.build(pl), Pool.build(nl)


def _to(enc: Any, dev: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(dev) for k, v in enc.items()}
