"""Proteins (S22, partial): Kabsch RMSD / TM-score against Biopython's SVDSuperimposer, BLOSUM62
substitution attacks (budget 1 against exhaustive search), bad letters refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.protein.attack import (
    AMINO,
    StructurePredictor,
    blosum62,
    check_sequences,
    substitution_attack,  # fmt: skip
)
from robustlab.protein.structure import kabsch_rmsd, superpose, tm_score

Bio = pytest.importorskip("Bio.SVDSuperimposer")


def _random_rotation(g: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(g.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_rmsd_and_tm_score_match_svdsuperimposer() -> None:
    g = np.random.default_rng(0)
    ps, qs, rms, tms = [], [], [], []
    for _ in range(5):
        q = np.cumsum(g.normal(size=(40, 3)) * 2.0, 0)  # a random chain, ~3.8 A steps
        p = (q + g.normal(size=q.shape) * 1.5) @ _random_rotation(g).T + g.normal(size=3) * 10
        sup = Bio.SVDSuperimposer()
        sup.set(q, p)  # reference, moved
        sup.run()
        moved = sup.get_transformed()
        d0 = 1.24 * (40 - 15) ** (1 / 3) - 1.8
        ps.append(p), qs.append(q), rms.append(sup.get_rms())
        tms.append(np.mean(1 / (1 + (np.linalg.norm(moved - q, axis=1) / d0) ** 2)))
        assert superpose(torch.tensor(p), torch.tensor(q)).numpy() == pytest.approx(moved, abs=1e-8)
    p, q = torch.tensor(np.array(ps)), torch.tensor(np.array(qs))
    assert kabsch_rmsd(p, q).numpy() == pytest.approx(rms, abs=1e-9)
    assert tm_score(p, q).numpy() == pytest.approx(tms, abs=1e-9)
    assert float(tm_score(q[0], q[0])) == pytest.approx(1.0)
    mirror = q[0] * torch.tensor([1.0, 1.0, -1.0])  # a reflection is not a rotation
    assert float(kabsch_rmsd(mirror, q[0])) > 0.1


def test_blosum62_entries_and_bad_letters() -> None:
    m = blosum62()
    idx = AMINO.index
    assert (m == m.T).all()
    assert int(m[idx("W"), idx("W")]) == 11 and int(m[idx("C"), idx("C")]) == 9
    assert int(m[idx("A"), idx("W")]) == -3 and int(m[idx("I"), idx("V")]) == 3
    with pytest.raises(ConfigError, match="'B' at position 2"):
        check_sequences(["MKBT"])
    with pytest.raises(ConfigError, match="'a' at position 0"):
        check_sequences(["MK", "ak"])


def _fold(seqs: list[str]) -> np.ndarray:
    """A deterministic toy predictor: a chain whose turn angles depend on residue hydropathy."""
    hyd = dict(zip(AMINO, [1.8, 2.5, -3.5, -3.5, 2.8, -0.4, -3.2, 4.5, -3.9, 3.8, 1.9, -3.5,
                           -1.6, -3.5, -4.5, -0.8, -0.7, 4.2, -0.9, -1.3], strict=True))  # fmt: skip
    out = []
    for s in seqs:
        h = np.array([hyd[c] for c in s])
        theta, phi = 1.6 + 0.1 * h, np.cumsum(0.9 + 0.15 * h)
        steps = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi),
                          np.cos(theta)], 1) * 3.8  # fmt: skip
        out.append(np.cumsum(steps, 0))
    return np.array(out)


def test_substitution_attack_budget_one_equals_exhaustive_search() -> None:
    pred = StructurePredictor(_fold)
    seqs = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMLEDPVAGKTW"[:12] + "LLKEAVRSWQ"]
    res = substitution_attack(pred, seqs, budget=1, min_score=1)
    m = blosum62()
    for b, s in enumerate(seqs):
        ref = torch.as_tensor(_fold([s]))[0]
        cands = [s[:p] + a + s[p + 1 :] for p in range(len(s)) for a in AMINO
                 if a != s[p] and m[AMINO.index(s[p]), AMINO.index(a)] >= 1]  # fmt: skip
        r = kabsch_rmsd(torch.as_tensor(_fold(cands)), ref.expand(len(cands), -1, -1))
        assert float(res.rmsd[b]) == pytest.approx(float(r.max()))
        diff = [(c, o) for c, o in zip(res.sequences[b], s, strict=True) if c != o]
        assert len(diff) == 1 and m[AMINO.index(diff[0][1]), AMINO.index(diff[0][0])] >= 1
    more = substitution_attack(pred, seqs, budget=3)
    assert (more.rmsd >= res.rmsd - 1e-12).all() and (more.edits <= 3).all()
    for s, o in zip(more.sequences, seqs, strict=True):
        assert sum(c != d for c, d in zip(s, o, strict=True)) == int(more.edits[seqs.index(o)])
    with pytest.raises(ModelOutputError, match="predictor returned"):
        StructurePredictor(lambda s: np.zeros((len(s), 3, 3)))(["MKTA"])
    with pytest.raises(ConfigError, match="not one of the 20"):
        substitution_attack(pred, ["MKXA"], budget=1)
