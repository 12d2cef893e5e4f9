"""Mutation testing of the numeric core: plant one small bug at a time, check a test catches it.

    .venv/bin/python scripts/mutation.py [--jobs 2] [--only NAME] [--list] [-v]
    make mutation

For each target below (a source file, the functions in it, and the tests that must guard them) the
script makes every *mutant* of those functions' bodies, one change each (``ast`` rewrite):

- arithmetic ``+ - * / // ** %`` and ``& |`` swapped (``+`` <-> ``-``, ``*`` <-> ``/``, ``**`` -> ``*``,
  ``&`` <-> ``|``), also in augmented assignments;
- comparisons ``< <= > >= == != is in`` flipped at the boundary or negated (``<`` <-> ``<=``, ...);
- ``and`` <-> ``or``; unary ``-``, ``not`` and ``~`` dropped;
- numbers ``n`` -> ``n + 1`` (ints) or ``x + 1.0`` (floats), ``True`` <-> ``False``;
- min/max pairs swapped in calls and keywords (``max`` <-> ``min``, ``amax``, ``clamp_min``,
  ``argmax``, ``maximum``, ``ceil``/``floor``; ``.clamp(max=1)`` -> ``.clamp(min=1)``).

Each mutant runs the target's tests in a forked child of a worker that imported torch, numpy,
scipy, pandas and pytest once (the child imports robustlab fresh from a private copy of ``src/``,
which the mutant is written into: the working tree is never touched). A mutant is *killed* when a
test fails or errors, or when it runs past its timeout; it *survives* when all tests pass.
Survivors listed in ``ACCEPTED`` (equivalent mutants, with the reason) do not fail the job; any
other survivor does (exit 1). docs/testing.md lists the current counts and the accepted survivors.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NC = "tests/test_numeric_core.py"
EDGES = "tests/test_numeric_core_edges.py"

# name -> (file under src/robustlab, functions (Class.method for methods), pytest arguments).
# Only tests that take seconds: the statistical coverage tests of smoothing and conformal train a
# model in a fixture (~15-50 s per mutant) and are left to the normal suite.
TARGETS: dict[str, tuple[str, list[str], list[str]]] = {
    "projection": (
        "core/types.py",
        ["lp_project", "_project_l1", "lp_norm", "ThreatModel.project", "ThreatModel.sample"],
        [NC, "-k", "projection or sample or threat_project"],
    ),
    "steps": ("attacks/steps.py", ["steepest_step"], [NC, EDGES, "-k", "step or fgsm"]),
    "fgsm": ("attacks/fgsm.py", ["FGSM.__call__"], [NC, "-k", "fgsm"]),
    "bootstrap": (
        "metrics/base.py",
        ["bootstrap_ci", "_boot_means", "paired_bootstrap_diff"],
        [NC, EDGES, "-k", "bootstrap"],
    ),
    "ranking": (
        "metrics/ranking.py",
        ["rank_metrics"],
        [NC, EDGES, "-k", "mrr or ndcg or rank_metrics"],
    ),
    "significance": (
        "metrics/significance.py",
        ["benjamini_hochberg", "permutation_pvalue"],
        ["tests/test_compare.py", EDGES, "-k", "benjamini or permutation"],
    ),
    "smoothing": (
        "certify/smoothing.py",
        ["lower_confidence_bound", "binom_pvalue_half", "GaussianSmoothing.certify"],
        [
            "tests/test_smoothing.py",
            EDGES,
            "-k",
            "constant_classifier or binomial or clopper or abstains",
        ],
    ),
    "conformal": (
        "certify/conformal.py",
        ["conformal_quantile", "class_scores", "rscp_sets", "coverage_and_size"],
        ["tests/test_conformal.py", EDGES, "-k", "quantile or aps or rscp"],
    ),
    "detection": (
        "metrics/detection.py",
        ["_sorted_counts", "auroc", "aupr", "fpr_at_tpr", "roc_curve"],
        ["tests/test_detection_metrics.py", "-k", "not invariants_on_real and not bootstrap"],
    ),
    "calibration": (
        "metrics/calibration.py",
        ["bin_index", "reliability", "risk_coverage", "aurc", "excess_aurc", "scores"],
        [
            "tests/test_diagnose_calibration.py",
            "-k",
            "torchmetrics or netcal or hand_case or brier or aurc or degenerate",
        ],
    ),
    "cka": (
        "metrics/representation.py",
        ["linear_cka", "hsic", "linear_cka_gram", "_centred_gram", "cka_matrix"],
        ["tests/test_diagnose_representations.py", "-k", "cka"],
    ),
}

# Survivors that are equivalent (or accepted), keyed by "target: function: change"; the reason is
# printed next to them and repeated in docs/testing.md.
_CHUNKS = (
    "changes only the chunk size of the memory-bounded resampling; numpy's Generator gives the "
    "same int64 draws in any chunking, so the means are identical (only memory use changes)"
)
_PERM_CHUNKS = (
    "changes only the block size; exactly n_perm permutations still run (checked with small "
    "blocks), and the p-value is exact in distribution for any block size"
)
_KEEPDIM = (
    "the mean over dim 0 without keepdim has shape [p] and broadcasts against [n, p] exactly as "
    "the [1, p] keepdim mean does: the same subtraction, bit for bit"
)
_CKA_TIE = (
    "differs only when the normaliser is exactly _EPS = 1e-12 to the last bit; below the cut-off "
    "a side counts as constant (CKA 0), and whether the tie itself does is a convention"
)
ACCEPTED: dict[str, str] = {
    "projection: ThreatModel.sample: + -> - in `x + delta`": (
        "the offsets are symmetric about 0 (Linf: uniform in [-eps, eps]; Lp: direction from "
        "2u - 1), so x - delta has the distribution of x + delta: the sampler's contract"
    ),
    "projection: _project_l1: <= -> < in `a.sum(dim=1) <= eps`": (
        "a point exactly on the L1 sphere goes through Duchi's threshold with theta = 0 and "
        "comes back unchanged"
    ),
    "projection: _project_l1: > -> >= in `mu - (cums - eps) / ar > 0`": (
        "a coordinate whose magnitude equals the threshold adds 0 to the sum: a rho one larger "
        "gives the same theta"
    ),
    "fgsm: FGSM.__call__: == -> != in `threat.norm == 'inf'`": (
        "the Linf shortcut and the general path (steepest step eps * sign(g), then projection "
        "onto the ball and the domain) give the same point"
    ),
    "steps: steepest_step: > -> >= in `flat > 0`": (
        "also blocks zero-gradient coordinates at the upper bound, whose magnitude is 0: never "
        "selected anyway"
    ),
    "steps: steepest_step: < -> <= in `flat < 0`": (
        "also blocks zero-gradient coordinates at the lower bound, whose magnitude is 0: never "
        "selected anyway"
    ),
    "bootstrap: _boot_means: 1 -> 2 in `max(1, 4000000 // max(1, len(v)))`": _CHUNKS,
    "bootstrap: _boot_means: 1 -> 2 in `max(1, len(v))`": _CHUNKS,
    "bootstrap: _boot_means: 4000000 -> 4000001 in `4000000 // max(1, len(v))`": _CHUNKS,
    "bootstrap: _boot_means: max( -> min(": _CHUNKS,
    "bootstrap: _boot_means: max( -> min( (#2)": _CHUNKS,
    "bootstrap: paired_bootstrap_diff: or -> and": (
        "with one side empty after dropping NaNs, the resampled mean of the empty side is NaN, "
        "so both versions return (nan, nan, nan)"
    ),
    "ranking: rank_metrics: > -> >= in `v > 0`": (
        "zero grades in the ideal list add 0 to the ideal DCG; the relevant count uses ig > 0"
    ),
    "ranking: rank_metrics: > -> >= in `v > 0` (#2)": (
        "zero grades in the ideal list add 0 to the ideal DCG; the relevant count uses ig > 0"
    ),
    "significance: permutation_pvalue: max( -> min(": _PERM_CHUNKS,
    "significance: permutation_pvalue: max( -> min( (#2)": _PERM_CHUNKS,
    "significance: permutation_pvalue: 1 -> 2 in `max(1, _CHUNK // len(d))`": _PERM_CHUNKS,
    "significance: permutation_pvalue: 1 -> 2 in `max(1, _CHUNK // len(pooled))`": _PERM_CHUNKS,
    "significance: permutation_pvalue: >= -> > in `np.abs(diff) >= t * (1 - 1e-12)`": (
        "the threshold is lowered by a relative 1e-12 (float rounding of the permuted means), so "
        "a tie at exactly the threshold does not occur"
    ),
    "significance: benjamini_hochberg: 1.0 -> 2.0 in `np.minimum(np.minimum.accumulate(scaled[::-1])[...`": (
        "the running minimum from the largest p-value (scaled by m / m = 1) never exceeds "
        "max p <= 1: the cap only guards against p-values above 1"
    ),
    "smoothing: lower_confidence_bound: > -> >= in `k.cpu() > 0`": (
        "at k = 0 the beta quantile is NaN and nan_to_num makes it 0: the same 0"
    ),
    "smoothing: lower_confidence_bound: 0.0 -> 1.0 in `torch.from_numpy(low).nan_to_num(0.0)`": (
        "the quantile is NaN only at k = 0, which the following where() sets to 0 anyway"
    ),
    "smoothing: GaussianSmoothing.certify: > -> >= in `p_lower > 0.5`": (
        "a Clopper-Pearson bound of exactly 0.5 needs a k, n, alpha that hit it to the last "
        "bit; abstaining at the tie is a convention"
    ),
    "smoothing: GaussianSmoothing.certify: 1.0 -> 2.0 in `p_lower.clamp(0.5, 1.0)`": (
        "a lower confidence bound never exceeds 1"
    ),
    "conformal: class_scores: 1 -> 2 in `((above * probs[:, None, :]).sum(-1) + u * prob...`": (
        "an APS score is a sum of probabilities <= 1 (u <= 1): the upper clamp only removes "
        "rounding above 1"
    ),
    "conformal: rscp_sets: 1 -> 2 in `(smoothed.double() - b).clamp(0, 1)`": (
        "mean scores are <= 1 and b > 0, so s - b < 1: the upper clamp never binds"
    ),
    "conformal: rscp_sets: <= -> < in `lhs <= thr + shift`": (
        "a class exactly on the threshold after Phi^-1 of Monte-Carlo means: a tie that does not "
        "occur with continuous scores"
    ),
    "cka: linear_cka: True -> False in `x.mean(0, keepdim=True)`": _KEEPDIM,
    "cka: linear_cka: True -> False in `y.mean(0, keepdim=True)`": _KEEPDIM,
    "cka: _centred_gram: True -> False in `x.mean(0, keepdim=True)`": _KEEPDIM,
    "cka: linear_cka: > -> >= in `float(den) > _EPS`": _CKA_TIE,
    "cka: linear_cka_gram: > -> >= in `den > _EPS`": _CKA_TIE,
    "cka: cka_matrix: > -> >= in `norm > _EPS`": _CKA_TIE,
    "cka: cka_matrix: 1.0 -> 2.0 in `-1.0`": (
        "the rows are centred Gram matrices over their norms, whose product ||Y^T X||_F^2 / "
        "(||X^T X||_F ||Y^T Y||_F) is >= 0 up to rounding: a lower clamp at -1 or -2 never binds"
    ),
    "calibration: bin_index: - -> + in `m - 1`": (
        "confidences above 1 are refused and np.linspace(0, 1, m + 1) ends exactly at 1.0, so "
        "searchsorted(edges, c, side='left') - 1 <= m - 1: the upper clip never binds"
    ),
    "calibration: bin_index: 0 -> 1 in `s[0]` (#2)": (
        "only the value in the error message: the branch runs only when the sorted s has "
        "s[0] == s[-1] (all equal) and n >= m >= 2, so s[1] == s[0]"
    ),
    "calibration: bin_index: > -> >= in `cuts > 0`": (
        "every cut is >= 1 (k n // m >= 1 for k >= 1 as m <= n, and searchsorted(s, s[c - 1], "
        "side='right') >= c), so cuts > 0 and cuts >= 0 are both always true"
    ),
}

BINOPS = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div, ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv,
    ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
}  # fmt: skip
CMPOPS = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In,
}  # fmt: skip
SYM = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Pow: "**",
    ast.Mod: "%", ast.BitAnd: "&", ast.BitOr: "|", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
    ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in",
    ast.NotIn: "not in", ast.And: "and", ast.Or: "or", ast.USub: "-", ast.Not: "not ",
    ast.Invert: "~",
}  # fmt: skip
PAIRS = {"min": "max", "amin": "amax", "minimum": "maximum", "clamp_min": "clamp_max",
         "argmin": "argmax", "floor": "ceil", "nanmin": "nanmax"}  # fmt: skip
SWAP = {**PAIRS, **{v: k for k, v in PAIRS.items()}}


@dataclass
class Mutant:
    target: str
    function: str
    line: int
    change: str
    index: int  # position of the mutated node in the function's ast.walk order
    kind: int  # which of the node's mutations

    @property
    def key(self) -> str:
        return f"{self.target}: {self.function}: {self.change}"


def seg(node: ast.AST, width: int = 50) -> str:
    t = ast.unparse(node)
    return t if len(t) <= width else t[: width - 3] + "..."


def _mutations(node: ast.AST, parent: ast.AST | None = None) -> list[tuple[str, callable]]:
    """(description, apply) for each mutation of ``node`` (``parent``: the expression around it,
    named in the description); apply edits the node in place."""
    out: list[tuple[str, callable]] = []
    if isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in BINOPS:
        new = BINOPS[type(node.op)]
        out.append(
            (
                f"{SYM[type(node.op)]} -> {SYM[new]} in `{seg(node)}`",
                lambda n: setattr(n, "op", new()),
            )
        )
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in CMPOPS:
                new = CMPOPS[type(op)]

                def flip(n: ast.Compare, i: int = i, new: type = new) -> None:
                    n.ops[i] = new()

                out.append((f"{SYM[type(op)]} -> {SYM[new]} in `{seg(node)}`", flip))
    elif isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        out.append((f"{SYM[type(node.op)]} -> {SYM[new]}", lambda n: setattr(n, "op", new())))
    elif isinstance(node, ast.UnaryOp) and type(node.op) in (ast.USub, ast.Not, ast.Invert):
        out.append((f"drop {SYM[type(node.op)].strip()} in `{seg(node)}`", "unwrap"))
    elif isinstance(node, ast.Constant) and type(node.value) in (bool, int, float):
        v = node.value
        new_v = (not v) if isinstance(v, bool) else v + (1 if isinstance(v, int) else 1.0)
        where = f" in `{seg(parent)}`" if parent is not None else ""
        out.append(
            (f"{v!r} -> {new_v!r}{where}", lambda n, new_v=new_v: setattr(n, "value", new_v))
        )
    elif isinstance(node, ast.Call):
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name in SWAP:
            attr = "attr" if isinstance(f, ast.Attribute) else "id"
            out.append(
                (f"{name}( -> {SWAP[name]}(", lambda n, a=attr: setattr(n.func, a, SWAP[name]))
            )
        for i, kw in enumerate(node.keywords):
            if kw.arg in SWAP:

                def rename(n: ast.Call, i: int = i) -> None:
                    n.keywords[i].arg = SWAP[n.keywords[i].arg]

                out.append((f"{name}({kw.arg}=...) -> {name}({SWAP[kw.arg]}=...)", rename))
    return out


def _functions(tree: ast.Module, names: list[str]) -> dict[str, ast.AST]:
    found: dict[str, ast.AST] = {}
    for top in tree.body:
        if isinstance(top, ast.FunctionDef) and top.name in names:
            found[top.name] = top
        if isinstance(top, ast.ClassDef):
            for sub in top.body:
                q = f"{top.name}.{sub.name}" if isinstance(sub, ast.FunctionDef) else ""
                if q in names:
                    found[q] = sub
    missing = set(names) - set(found)
    if missing:
        raise SystemExit(f"mutation: functions not found: {sorted(missing)}")
    return found


def _body_nodes(fn: ast.FunctionDef) -> list[tuple[ast.AST, ast.AST | None]]:
    """(node, the expression it is part of) for the body (docstring and annotations excluded),
    in a fixed order."""
    body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
    nodes: list[tuple[ast.AST, ast.AST | None]] = []
    for stmt in body:
        parents = {c: p for p in ast.walk(stmt) for c in ast.iter_child_nodes(p)}
        for n in ast.walk(stmt):
            if isinstance(n, ast.arg | ast.AnnAssign | ast.keyword):
                continue
            p = parents.get(n)
            if isinstance(p, ast.keyword | ast.Attribute):
                p = parents.get(p)
            nodes.append((n, p if isinstance(p, ast.expr) else None))
    return nodes


def enumerate_mutants(only: str | None = None) -> list[Mutant]:
    out: list[Mutant] = []
    for target, (path, names, _) in TARGETS.items():
        if only and target != only:
            continue
        tree = ast.parse((ROOT / "src/robustlab" / path).read_text())
        for fname, fn in _functions(tree, names).items():
            seen: dict[str, int] = {}
            for i, (node, parent) in enumerate(_body_nodes(fn)):
                for k, (desc, _) in enumerate(_mutations(node, parent)):
                    seen[desc] = seen.get(desc, 0) + 1  # the same change twice: numbered
                    desc += f" (#{seen[desc]})" if seen[desc] > 1 else ""
                    out.append(Mutant(target, fname, node.lineno, desc, i, k))
    return out


def mutated_source(m: Mutant) -> str:
    path, names, _ = TARGETS[m.target]
    tree = ast.parse((ROOT / "src/robustlab" / path).read_text())
    fn = _functions(tree, names)[m.function]
    node, parent = _body_nodes(fn)[m.index]
    action = _mutations(node, parent)[m.kind][1]
    if action == "unwrap":  # replace the unary operation by its operand, in its parent
        for parent in ast.walk(fn):
            for field, value in ast.iter_fields(parent):
                if value is node:
                    setattr(parent, field, copy.deepcopy(node.operand))
                elif isinstance(value, list) and any(v is node for v in value):
                    value[[v is node for v in value].index(True)] = copy.deepcopy(node.operand)
    else:
        action(node)
    return ast.unparse(ast.fix_missing_locations(tree))


# ---- running --------------------------------------------------------------------------------
def _run_forked(args: list[str], src: Path, log: Path, timeout: float, module: str) -> str:
    """Run pytest ``args`` in a forked child importing robustlab from ``src``: passed / failed /
    timeout / error. The child first checks that ``module`` (the mutated one) is imported from
    ``src``: were robustlab found elsewhere first (another checkout's regular package beats a
    namespace portion), every mutant would silently "survive"."""
    pid = os.fork()
    if pid == 0:  # child
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.setpgid(0, 0)
            import importlib.util

            import pytest

            origin = importlib.util.find_spec(module).origin or ""
            if not origin.startswith(str(src) + os.sep):
                print(f"mutation: {module} would be imported from {origin}, not {src}")
                os._exit(6)

            # plain asserts: a verdict needs no assertion rewriting (~0.4 s per mutant)
            rc = pytest.main(["-q", "-x", "-p", "no:cacheprovider", "--assert=plain", *args])
            os._exit(int(rc))
        except BaseException:  # noqa: BLE001 - a child must never return into the worker
            os._exit(4)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
            # 1 tests failed, 2 interrupted (an error while collecting), 3 internal error
            if rc == 6:
                return "error (mutant not imported: " + log.read_text().strip()[-300:] + ")"
            return "passed" if rc == 0 else "failed" if rc in (1, 2, 3) else f"error (exit {rc})"
        if time.monotonic() > deadline:
            with _suppress():
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.02)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _preload() -> None:
    """Import (and warm up) once, in the worker, what every forked child would import again:
    ~1.5 s per mutant saved. robustlab itself is not imported here (each child imports the
    mutant)."""
    import anyio.pytest_plugin  # noqa: F401 - pytest's plugin entry point
    import matplotlib
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pydantic  # noqa: F401
    import pytest  # noqa: F401
    import scipy.stats  # noqa: F401
    import sqlalchemy.orm  # noqa: F401
    import torch
    import torch.distributed.tensor  # noqa: F401 - torch.testing.assert_close imports it lazily
    import torch.testing  # noqa: F401
    import yaml  # noqa: F401

    matplotlib.use("Agg")
    torch.set_num_threads(1)  # no thread pool in the worker to fork
    a = torch.randn(64, 64, dtype=torch.float64)
    (a @ a).norm(dim=1).sort()


def worker(k: int, n: int, only: str | None, out: Path) -> None:
    """Run every n-th mutant (from the k-th) in a private copy of src/, results as JSON lines."""
    sys.dont_write_bytecode = True
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = Path(tempfile.mkdtemp(prefix="robustlab-mutation-"))
    try:
        src = tmp / "src"
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        sys.path.insert(0, str(src))
        os.environ["PYTHONPATH"] = str(src)  # subprocesses of the tests see the mutant too
        os.chdir(ROOT)
        _preload()

        mutants = enumerate_mutants(only)[k::n]
        base: dict[str, float] = {}
        with out.open("w") as f:
            for m in mutants:
                path, _, args = TARGETS[m.target]
                module = "robustlab." + path.removesuffix(".py").replace("/", ".")
                if m.target not in base:  # the unmutated tests must pass first
                    t0 = time.monotonic()
                    verdict = _run_forked(args, src, tmp / "base.log", 600, module)
                    base[m.target] = time.monotonic() - t0
                    if verdict != "passed":
                        log = (tmp / "base.log").read_text()[-2000:]
                        raise SystemExit(f"mutation: baseline of {m.target} {verdict}:\n{log}")
                file = src / "robustlab" / path
                original = file.read_text()
                file.write_text(mutated_source(m))
                t0 = time.monotonic()
                try:
                    limit = 3 * base[m.target] + 10
                    verdict = _run_forked(args, src, tmp / "m.log", limit, module)
                finally:
                    file.write_text(original)
                rec = {**vars(m), "key": m.key, "verdict": verdict, "s": time.monotonic() - t0}
                f.write(json.dumps(rec) + "\n")
                f.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", choices=sorted(TARGETS), help="one target")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="print killed mutants too")
    ap.add_argument("--save", type=Path, help="write the results (JSON) here")
    ap.add_argument("--load", type=Path, help="report saved results instead of running")
    ap.add_argument("--worker", nargs=3, metavar=("K", "N", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(int(a.worker[0]), int(a.worker[1]), a.only, Path(a.worker[2]))
        return
    if a.load:
        saved = json.loads(a.load.read_text())
        report(saved["results"], saved["wall_s"], a.verbose)
        return
    mutants = enumerate_mutants(a.only)
    if a.list:
        for m in mutants:
            print(f"{TARGETS[m.target][0]}:{m.line} {m.function}: {m.change}")
        print(f"{len(mutants)} mutants")
        return
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as d:
        outs = [Path(d) / f"w{k}.jsonl" for k in range(a.jobs)]
        only = ["--only", a.only] if a.only else []
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, *only, "--worker", str(k), str(a.jobs), str(o)]
            )
            for k, o in enumerate(outs)
        ]
        rcs = [p.wait() for p in procs]
        results = [json.loads(ln) for o in outs if o.exists() for ln in o.read_text().splitlines()]
    if any(rcs) or len(results) != len(mutants):
        raise SystemExit(f"mutation: a worker failed (exit {rcs}); {len(results)} results")
    wall = time.monotonic() - t0
    if a.save:
        a.save.write_text(json.dumps({"results": results, "wall_s": wall}))
    report(results, wall, a.verbose)


def report(results: list[dict], wall: float, verbose: bool) -> None:
    results.sort(key=lambda r: (r["target"], r["line"], r["change"]))
    survived = [r for r in results if r["verdict"] == "passed"]
    errors = [r for r in results if r["verdict"].startswith("error")]
    for r in results:
        path = TARGETS[r["target"]][0]
        where = f"src/robustlab/{path}:{r['line']} {r['function']}: {r['change']}"
        if r["verdict"] == "passed":
            why = ACCEPTED.get(r["key"])
            print(
                f"SURVIVED{' (accepted)' if why else ''}  {where}" + (f"\n    {why}" if why else "")
            )
        elif verbose or r in errors:
            print(f"{'killed' if r['verdict'] in ('failed', 'timeout') else r['verdict']:8s}  "
                  f"{where}{' (timeout)' if r['verdict'] == 'timeout' else ''}")  # fmt: skip
    by_target: dict[str, list[int]] = {}
    for r in results:
        by_target.setdefault(r["target"], [0, 0])[r["verdict"] == "passed"] += 1
    print("\ntarget          mutants  survived")
    for t, (killed, surv) in by_target.items():
        print(f"{t:15s} {killed + surv:7d}  {surv:8d}")
    unexpected = [r for r in survived if r["key"] not in ACCEPTED]
    print(
        f"{len(results)} mutants: {len(results) - len(survived)} killed, {len(survived)} survived "
        f"({len(survived) - len(unexpected)} accepted as equivalent), {len(errors)} errors; "
        f"{wall:.0f} s wall"
    )
    if unexpected or errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
