"""Two-stage robust optimization (S24): exact column-and-constraint generation and Neur2RO.

:mod:`robustlab.optim.knapsack` holds the instance family (a two-stage robust knapsack under
budgeted uncertainty), its exact second stage, the exact adversarial problem and CCG;
:mod:`robustlab.optim.neur2ro` the learned second-stage value network embedded in the CCG master.
The suite side is the ``robust-knapsack`` dataset, the ``neur2ro-knapsack`` model and the
``neur2ro`` diagnosis; the report section is ``robust_opt``. See docs/robust-optimization.md.
"""
