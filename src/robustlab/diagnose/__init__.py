"""Diagnoses: why a model is or is not robust (the mission's fourth pillar).

A diagnosis is a suite probe of kind ``diagnosis``, registered in
:data:`robustlab.core.registry.diagnoses` (one file each in this package), that reads a model and
data and writes **per-example records** like every other probe: failure/OOD detector scores,
calibration confidences, probe predictions per layer, memorisation flags, backdoor detection
scores, ... Its numbers are then pure functions of the stored records, shown by a report section
(``report/sections/``). See :mod:`robustlab.diagnose.base` for the protocol and
:mod:`robustlab.diagnose.features` for the shared, cached feature extraction.
"""
