"""Substitution attacks on protein structure predictors, bounded by BLOSUM62 and an edit budget.

S22 (robustness of protein structure prediction to sequence perturbations). Threat model: at most
``budget`` positions of the sequence are substituted, each by an amino acid whose BLOSUM62 score
against the original residue is at least ``min_score`` (conservative substitutions; BLOSUM62
from Biopython). Goal: maximise the Kabsch RMSD between the prediction for the perturbed sequence
and the prediction for the original. Search: greedy, one substitution per step; each step scores
every allowed single substitution of every sequence in one batched predictor call.

A predictor is any callable ``list[str] -> [B, L, 3]`` C-alpha coordinates
(:class:`StructurePredictor` checks its outputs). Example::

    res = substitution_attack(StructurePredictor(fold), ["MKTAYIAKQR"], budget=2)
    res.sequences, res.rmsd, res.queries
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.protein.structure import kabsch_rmsd

AMINO = "ACDEFGHIKLMNPQRSTVWY"


def check_sequences(seqs: Sequence[str]) -> None:
    """A :class:`ConfigError` naming the sequence, position and letter that is not one of the 20
    standard amino acids (upper case one-letter codes)."""
    for i, s in enumerate(seqs):
        if not isinstance(s, str) or not s:
            raise ConfigError(f"sequence {i} is not a non-empty string")
        for j, c in enumerate(s):
            if c not in AMINO:
                raise ConfigError(f"sequence {i} has {c!r} at position {j}: not one of the 20 "
                                  f"amino acids {AMINO}")  # fmt: skip


def blosum62() -> torch.Tensor:
    """BLOSUM62 over :data:`AMINO` (``[20, 20]``, int), from Biopython."""
    try:
        from Bio.Align import substitution_matrices
    except ImportError:
        raise ConfigError("BLOSUM62 needs Biopython: pip install 'robustlab[protein]'") from None
    m = substitution_matrices.load("BLOSUM62")
    return torch.tensor([[int(m[a, b]) for b in AMINO] for a in AMINO])


class StructurePredictor:
    """Adapter for any structure predictor: ``fn(list[str]) -> [B, L, 3]`` (array or tensor)."""

    def __init__(self, fn: Callable[[list[str]], Any]) -> None:
        self.fn = fn

    def __call__(self, seqs: list[str]) -> torch.Tensor:
        check_sequences(seqs)
        out = torch.as_tensor(self.fn(list(seqs))).double()
        lengths = {len(s) for s in seqs}
        if out.dim() != 3 or out.shape[0] != len(seqs) or out.shape[2] != 3 or len(lengths) != 1 \
                or out.shape[1] != lengths.pop():  # fmt: skip
            raise ModelOutputError(f"predictor returned {tuple(out.shape)} for {len(seqs)} "
                                   f"sequences of lengths {sorted({len(s) for s in seqs})}")  # fmt: skip
        return out


@dataclass
class SubstitutionResult:
    sequences: list[str]
    rmsd: torch.Tensor  # [B] Kabsch RMSD of perturbed vs original prediction
    edits: torch.Tensor  # [B] substitutions made
    queries: int  # sequences predicted (batched)


def substitution_attack(
    predictor: Callable[[list[str]], torch.Tensor], seqs: Sequence[str], budget: int = 1,
    min_score: int = 1,
) -> SubstitutionResult:  # fmt: skip
    """Greedy BLOSUM62-bounded substitutions (module docstring), each sequence separately but
    every candidate of a step in one predictor call."""
    check_sequences(seqs)
    if budget < 0:
        raise ConfigError(f"edit budget must be >= 0, got {budget}")
    allowed = blosum62() >= min_score
    allowed.fill_diagonal_(False)
    cur = list(seqs)
    ref = predictor(cur)
    queries = len(cur)
    best = torch.zeros(len(cur), dtype=torch.float64)
    edits = torch.zeros(len(cur), dtype=torch.long)
    orig = [torch.tensor([AMINO.index(c) for c in s]) for s in seqs]
    for _ in range(budget):
        cands: list[str] = []
        owner: list[int] = []
        for b, s in enumerate(cur):
            touched = torch.tensor([c != o for c, o in zip(s, seqs[b], strict=True)])
            pos, aa = allowed[orig[b]].nonzero(as_tuple=True)  # bounded against the original
            keep = ~touched[pos]
            for p, a in zip(pos[keep].tolist(), aa[keep].tolist(), strict=True):
                cands.append(s[:p] + AMINO[a] + s[p + 1 :])
                owner.append(b)
        if not cands:
            break
        pred = predictor(cands)
        queries += len(cands)
        own = torch.tensor(owner)
        r = kabsch_rmsd(pred, ref[own])
        for b in range(len(cur)):
            mine = (own == b).nonzero()[:, 0]
            if len(mine) and r[mine].max() > best[b]:
                k = int(mine[r[mine].argmax()])
                cur[b], best[b], edits[b] = cands[k], r[k], edits[b] + 1
    return SubstitutionResult(cur, best, edits, queries)
