"""ReCode's (S2) semantics-preserving prompt transformations for code generation, one file per family.

Code perturbations take and return *problem dicts* (``prompt``, ``entry_point``, ...; see
:mod:`robustlab.code.problems`): a function-name transformation returns the renamed
``entry_point``, syntax transformations record ``renames`` (variables the solution must follow),
format transformations record ``indent`` (the new indentation unit), and a transformation that
cannot apply returns the problem unchanged with ``skipped`` saying why.
"""
