"""Proteins (S22, partial): BLOSUM62-bounded substitution attacks on structure predictors, Kabsch
RMSD and TM-score. See :mod:`robustlab.protein.structure` and :mod:`robustlab.protein.attack`;
not yet a registered task (docs/proteins.md says what is missing)."""
