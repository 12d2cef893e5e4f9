"""Drift monitoring (S44, "Robustness in MLOps"): score batches of production inputs against a
reference set with standard two-sample detectors, record each batch in the store, show them over
time.

Detectors (all batched numpy; features = the inputs flattened to ``[N, D]``):

``ks``    Kolmogorov-Smirnov per feature (``scipy.stats.ks_2samp`` along axis 0), p-values
          corrected across features with Bonferroni (``correction: bonferroni``, default) or
          Benjamini-Hochberg (``bh``). Statistic: the largest D; p-value: the smallest corrected p.
``mmd``   squared maximum mean discrepancy (unbiased estimator, Gretton et al., JMLR 2012) with a
          Gaussian kernel ``exp(-|x-y|^2 / (2 sigma^2))``, ``sigma`` = median pairwise distance of the
          pooled sample (median heuristic); p-value by a permutation test: all permutations' MMD^2
          from one kernel matrix, ``(1 + #{perm >= observed}) / (1 + n_permutations)``.
``psi``   population stability index per feature on 10 bins at the reference's quantiles,
          ``sum (b - r) ln(b / r)`` with empty-bin proportions floored at 1e-4; statistic: the
          mean PSI over features; no p-value; alert above ``psi_threshold`` (0.2).
``c2st``  classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017): equal numbers of reference
          and batch examples, a logistic regression trained on half, accuracy on the other half,
          one-sided binomial test against chance (0.5). ``embed`` maps inputs to embeddings
          (e.g. a model's penultimate features); raw inputs otherwise.

A monitor is a run of the store whose suite name is ``monitor:<name>``; each scored batch is one
unit (key ``<index>-<batch name>``) holding one record per detector (kind ``monitor``, level = the
batch index, ``x.statistic``, ``x.p_value``, ``x.alert``, ``x.threshold``). The reference's
feature shape and fingerprint are kept in the run, so a batch of another shape is refused with
both shapes named before anything is written.

Example::

    ref = datasets.create("digits", {"split": "test"}).x.numpy()
    res = score(ref, batch, detectors=("ks", "mmd", "psi", "c2st"), alpha=0.05, seed=0)
    res["mmd"]["alert"]
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robustlab.core.errors import ConfigError

DETECTORS = ("ks", "mmd", "psi", "c2st")
KIND = "monitor"
PREFIX = "monitor:"
PSI_FLOOR = 1e-4


# detectors ----------------------------------------------------------------------------------
def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def ks_test(
    ref: np.ndarray, x: np.ndarray, alpha: float = 0.05, correction: str = "bonferroni"
) -> dict[str, Any]:
    """Per-feature two-sample Kolmogorov-Smirnov tests with a correction across features.

    Returns ``statistic`` (largest D), ``p_value`` (smallest corrected p), ``alert``
    (``p_value < alpha``), ``n_drifted`` (features rejected) and the per-feature ``d``/``p``.

    >>> ks_test(np.zeros((5, 2)), np.ones((5, 2)))["alert"]
    True
    """
    from scipy import stats

    r, b = _flat(ref), _flat(x)
    res = stats.ks_2samp(r, b, axis=0)
    d = np.atleast_1d(np.asarray(res.statistic, dtype=np.float64))
    p = np.atleast_1d(np.asarray(res.pvalue, dtype=np.float64))
    d, p = np.nan_to_num(d, nan=0.0), np.nan_to_num(p, nan=1.0)
    if correction == "bonferroni":
        adj = np.minimum(p * len(p), 1.0)
    elif correction == "bh":
        adj = stats.false_discovery_control(p, method="bh")
    else:
        raise ConfigError(f"ks correction must be 'bonferroni' or 'bh', got {correction!r}")
    pmin = float(adj.min())
    return {
        "statistic": float(d.max()), "p_value": pmin, "alert": pmin < alpha, "threshold": alpha,
        "n_drifted": int((adj < alpha).sum()), "correction": correction, "d": d, "p": p,
    }  # fmt: skip


def median_bandwidth(z: np.ndarray) -> float:
    """Median heuristic: the median Euclidean distance between distinct points of ``z``."""
    d2 = _sq_dists(z, z)
    iu = np.triu_indices(len(z), 1)
    sigma = float(np.sqrt(np.median(d2[iu])))
    return sigma if sigma > 0 else 1.0


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0)


def mmd2_masks(kernel: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 for each split of the pooled sample: ``masks`` ``[P, N]`` is True for the
    first sample. One kernel matrix, all splits in two matrix products (no per-split loop)."""
    k = kernel.copy()
    np.fill_diagonal(k, 0.0)
    a = masks.astype(np.float64)
    b = 1.0 - a
    n, m = a.sum(1), b.sum(1)
    ka = a @ k  # [P, N]
    aka, akb = (ka * a).sum(1), (ka * b).sum(1)
    bkb = ((b @ k) * b).sum(1)
    return aka / (n * (n - 1)) + bkb / (m * (m - 1)) - 2.0 * akb / (n * m)


def mmd_test(
    ref: np.ndarray,
    x: np.ndarray,
    alpha: float = 0.05,
    n_permutations: int = 500,
    seed: int = 0,
    sigma: float | None = None,
) -> dict[str, Any]:
    """MMD^2 two-sample test with a Gaussian kernel and a permutation p-value (Gretton et al.
    2012). ``sigma`` defaults to the median heuristic on the pooled sample.

    >>> mmd_test(np.zeros((4, 1)), np.ones((4, 1)), n_permutations=50)["statistic"] > 0
    True
    """
    r, b = _flat(ref), _flat(x)
    if len(r) < 2 or len(b) < 2:
        raise ConfigError(f"mmd needs >= 2 examples per sample, got {len(r)} and {len(b)}")
    z = np.concatenate([r, b])
    sig = median_bandwidth(z) if sigma is None else float(sigma)
    kernel = np.exp(-_sq_dists(z, z) / (2.0 * sig * sig))
    n = len(r)
    rng = np.random.default_rng(seed)
    perm = rng.permuted(np.tile(np.arange(len(z)) < n, (n_permutations, 1)), axis=1)
    masks = np.concatenate([(np.arange(len(z)) < n)[None], perm])
    stats_ = mmd2_masks(kernel, masks)
    obs, null = float(stats_[0]), stats_[1:]
    p = float((1 + (null >= obs).sum()) / (1 + n_permutations))
    return {
        "statistic": obs, "p_value": p, "alert": p < alpha, "threshold": alpha, "sigma": sig,
        "n_permutations": n_permutations,
    }  # fmt: skip


def psi(ref: np.ndarray, x: np.ndarray, bins: int = 10) -> np.ndarray:
    """Population stability index per feature, binned on the reference's quantiles.

    Bin ``j`` of a feature holds values in ``(e_{j-1}, e_j]`` with ``e`` the reference's interior
    quantiles (ties of the edges fall into the lower bin; repeated edges leave empty bins in both
    samples, which add 0). Proportions are floored at ``PSI_FLOOR``.

    >>> float(psi(np.arange(10.0)[:, None], np.arange(10.0)[:, None])[0])
    0.0
    """
    r, b = _flat(ref), _flat(x)
    edges = np.quantile(r, np.arange(1, bins) / bins, axis=0).T  # [D, bins-1]

    def props(v: np.ndarray) -> np.ndarray:
        idx = (v[:, :, None] > edges[None]).sum(2)  # [N, D] bin index 0..bins-1
        onehot = idx[:, :, None] == np.arange(bins)[None, None]
        return np.maximum(onehot.mean(0), PSI_FLOOR)  # [D, bins]

    pr, pb = props(r), props(b)
    return ((pb - pr) * np.log(pb / pr)).sum(1)


def psi_test(
    ref: np.ndarray, x: np.ndarray, threshold: float = 0.2, bins: int = 10
) -> dict[str, Any]:
    """PSI detector: mean PSI over features, alert above ``threshold`` (no p-value)."""
    v = psi(ref, x, bins)
    stat = float(v.mean())
    return {
        "statistic": stat, "p_value": float("nan"), "alert": stat > threshold,
        "threshold": threshold, "max_feature": float(v.max()), "bins": bins,
    }  # fmt: skip


def c2st_test(
    ref: np.ndarray,
    x: np.ndarray,
    alpha: float = 0.05,
    seed: int = 0,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017): held-out accuracy of a logistic
    regression telling reference from batch, on ``min(n, m)`` examples of each, split in halves;
    p-value of a one-sided binomial test against accuracy 0.5."""
    from scipy import stats
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    r = _flat(embed(ref) if embed else ref)
    b = _flat(embed(x) if embed else x)
    k = min(len(r), len(b))
    if k < 4:
        raise ConfigError(f"c2st needs >= 4 examples per sample, got {len(r)} and {len(b)}")
    rng = np.random.default_rng(seed)
    r, b = r[rng.permutation(len(r))[:k]], b[rng.permutation(len(b))[:k]]
    half = k // 2
    xtr = np.concatenate([r[:half], b[:half]])
    ytr = np.r_[np.zeros(half), np.ones(half)]
    xte = np.concatenate([r[half:], b[half:]])
    yte = np.r_[np.zeros(k - half), np.ones(k - half)]
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=1.0, max_iter=500).fit(scaler.transform(xtr), ytr)
    correct = int((clf.predict(scaler.transform(xte)) == yte).sum())
    p = float(stats.binomtest(correct, len(yte), 0.5, alternative="greater").pvalue)
    return {
        "statistic": correct / len(yte), "p_value": p, "alert": p < alpha, "threshold": alpha,
        "n_test": len(yte), "n_correct": correct,
    }  # fmt: skip


def score(
    ref: np.ndarray,
    x: np.ndarray,
    detectors: Sequence[str] = DETECTORS,
    alpha: float = 0.05,
    seed: int = 0,
    correction: str = "bonferroni",
    n_permutations: int = 500,
    psi_threshold: float = 0.2,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every detector's result on one batch (see the module docstring)."""
    check_shape(ref, x, "batch")
    out: dict[str, dict[str, Any]] = {}
    for name in detectors:
        if name == "ks":
            out[name] = ks_test(ref, x, alpha, correction)
        elif name == "mmd":
            out[name] = mmd_test(ref, x, alpha, n_permutations, seed)
        elif name == "psi":
            out[name] = psi_test(ref, x, psi_threshold)
        elif name == "c2st":
            out[name] = c2st_test(ref, x, alpha, seed, embed)
        else:
            raise ConfigError(f"unknown drift detector {name!r}; known: {', '.join(DETECTORS)}")
    return out


def check_shape(ref: np.ndarray | Sequence[int], x: np.ndarray, what: str) -> None:
    """Refuse a batch whose per-example feature shape differs from the reference's."""
    want = tuple(ref) if not hasattr(ref, "shape") else tuple(ref.shape[1:])  # type: ignore[union-attr]
    got = tuple(np.shape(x)[1:])
    if want != got:
        raise ConfigError(
            f"{what} has feature shape {got} but the monitor's reference has {want}: "
            "a monitor scores batches of the reference's feature schema only (nothing stored)"
        )


# config, data -------------------------------------------------------------------------------
_MONITOR_KEYS = {
    "name", "reference", "batches", "detectors", "alpha", "seed", "correction",
    "n_permutations", "psi_threshold", "embedding",
}  # fmt: skip
_DATA_KEYS = {"name", "dataset", "params", "limit", "sample", "path", "perturbation"}


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and check a monitor YAML (see docs/monitor.md)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"monitor config {str(p)!r} not found")
    cfg = yaml.safe_load(p.read_text()) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{p}: a monitor config is a mapping")
    unknown = set(cfg) - _MONITOR_KEYS
    if unknown:
        raise ConfigError(f"{p}: unknown monitor keys {sorted(unknown)}")
    for key in ("name", "reference", "batches"):
        if key not in cfg:
            raise ConfigError(f"{p}: monitor config needs {key!r}")
    if not isinstance(cfg["batches"], list) or not cfg["batches"]:
        raise ConfigError(f"{p}: 'batches' must be a non-empty list")
    for spec in [cfg["reference"], *cfg["batches"]]:
        if not isinstance(spec, dict) or set(spec) - _DATA_KEYS:
            raise ConfigError(
                f"{p}: a data spec is a mapping of {sorted(_DATA_KEYS)}, got {spec!r}"
            )
        if ("dataset" in spec) == ("path" in spec):
            raise ConfigError(f"{p}: a data spec names one of 'dataset' or 'path': {spec!r}")
    if cfg.get("correction", "bonferroni") not in ("bonferroni", "bh"):
        raise ConfigError(
            f"{p}: correction must be 'bonferroni' or 'bh', got {cfg['correction']!r}"
        )
    for key in ("alpha", "psi_threshold", "n_permutations"):
        v = cfg.get(key)
        kind = int if key == "n_permutations" else (int, float)
        if v is not None and (isinstance(v, bool) or not isinstance(v, kind) or v <= 0):
            raise ConfigError(f"{p}: {key} must be a positive number, got {v!r}")
    cfg.setdefault("detectors", list(DETECTORS))
    for d in cfg["detectors"]:
        if d not in DETECTORS:
            raise ConfigError(f"{p}: unknown drift detector {d!r}; known: {', '.join(DETECTORS)}")
    return cfg


def load_inputs(spec: dict[str, Any], seed: int = 0) -> np.ndarray:
    """The inputs of a data spec: a registered dataset (with ``params``, an optional ``limit`` of
    first examples, ``sample`` (a seeded random subset) and an optional
    ``perturbation: {name, level}``) or a ``.npy`` file."""
    if "path" in spec:
        p = Path(spec["path"])
        if not p.is_file():
            raise ConfigError(f"batch file {str(p)!r} not found")
        x = np.load(p, allow_pickle=False)
        if "perturbation" in spec:
            raise ConfigError("perturbation applies to 'dataset' specs only")
        return x[: spec["limit"]] if spec.get("limit") else x
    import torch

    from robustlab.core.registry import datasets, perturbations
    from robustlab.core.rng import ExampleRNG

    d = datasets.create(spec["dataset"], spec.get("params") or {})
    if not isinstance(d.x, torch.Tensor):
        raise ConfigError(
            f"monitor needs tensor inputs; dataset {spec['dataset']!r} has {type(d.x)}"
        )
    x, ids = d.x, d.ids
    if spec.get("limit"):
        x, ids = x[: spec["limit"]], ids[: spec["limit"]]  # type: ignore[index]
    if spec.get("sample"):  # a seeded random subset (an i.i.d. batch, unlike the first examples)
        k = int(spec["sample"])
        if not 0 < k <= len(x):
            raise ConfigError(f"sample must be in 1..{len(x)}, got {k}")
        pick = torch.from_numpy(np.random.default_rng(seed).permutation(len(x))[:k])
        x, ids = x[pick], ids[pick]  # type: ignore[index]
    pert = spec.get("perturbation")
    if pert:
        if not isinstance(pert, dict) or "name" not in pert:
            raise ConfigError(f"perturbation must be {{name, level}}, got {pert!r}")
        fn = perturbations.create(pert["name"], pert.get("params") or {})
        rng = ExampleRNG.from_seed(f"monitor/{seed}/{pert['name']}", ids)  # type: ignore[arg-type]
        with torch.no_grad():
            x = fn(x, float(pert.get("level", 1)), rng)
    return x.detach().cpu().numpy()


def embedder(spec: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The C2ST's embedding from ``{model, params, layer}``: a registered model's ``layer``
    (default ``penultimate``, the input of its last linear layer) read in one batched pass."""
    import torch

    from robustlab.core.registry import models
    from robustlab.diagnose.features import extract

    if not isinstance(spec, dict) or "model" not in spec:
        raise ConfigError(f"embedding must be {{model, params, layer}}, got {spec!r}")
    model = models.create(spec["model"], spec.get("params") or {})
    layer = spec.get("layer", "penultimate")

    def embed(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            return extract(model, t, (layer,))[layer].numpy()

    return embed


def fingerprint(x: np.ndarray) -> str:
    a = np.ascontiguousarray(x)
    return hashlib.sha256(str((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()[:16]


# store ----------------------------------------------------------------------------------------
def _find_run(st: Any, name: str, config_hash: str) -> str | None:
    runs = st.runs()
    if runs.empty:
        return None
    mine = runs[runs["suite_name"] == PREFIX + name]
    for rid in mine["id"]:  # newest first
        if st.run_info(rid)["suite_hash"] == config_hash:
            return str(rid)
    return None


def run_monitor(cfg: dict[str, Any], st: Any) -> tuple[str, list[dict[str, Any]]]:
    """Score every batch of a checked config against its reference and append the batches as
    units of the monitor's run (created on first use; the same name and settings reuse it).
    All batches are loaded, checked and scored before anything is written, and written in one
    transaction: a bad batch leaves the store as it was."""
    seed = int(cfg.get("seed", 0))
    ref = load_inputs(cfg["reference"], seed)
    if len(ref) < 4:
        raise ConfigError(f"the reference has {len(ref)} examples; a monitor needs >= 4")
    batches = []
    for spec in cfg["batches"]:
        label = str(spec.get("name") or spec.get("dataset") or Path(spec["path"]).stem)
        x = load_inputs(spec, seed)
        check_shape(ref, x, f"batch {label!r}")
        if len(x) < 4:
            raise ConfigError(f"batch {label!r} has {len(x)} examples; a monitor needs >= 4")
        batches.append((label, x))
    settings = {
        k: cfg.get(k, d)
        for k, d in (("detectors", list(DETECTORS)), ("alpha", 0.05), ("correction", "bonferroni"),
                     ("n_permutations", 500), ("psi_threshold", 0.2), ("seed", 0),
                     ("embedding", None))
    }  # fmt: skip
    suite = {
        "kind": KIND, "name": cfg["name"], "reference": cfg["reference"],
        "reference_fingerprint": fingerprint(ref), "shape": list(ref.shape[1:]),
        "n_reference": len(ref), **settings,
    }  # fmt: skip
    config_hash = hashlib.sha256(json.dumps(suite, sort_keys=True).encode()).hexdigest()[:16]
    embed = embedder(settings["embedding"]) if settings["embedding"] else None
    run_id = _find_run(st, cfg["name"], config_hash)
    start = 0 if run_id is None else len(st.run_info(run_id)["units"])
    results, units = [], []
    for j, (label, x) in enumerate(batches):
        t0 = time.process_time()
        res = score(ref, x, settings["detectors"], settings["alpha"], seed,
                    settings["correction"], settings["n_permutations"], settings["psi_threshold"],
                    embed)  # fmt: skip
        rows = _rows(cfg["name"], start + j, label, len(ref), len(x), res)
        key = f"{start + j:04d}-{label}"[:64]
        units.append(
            (key, f"batch {label} ({len(x)} examples)", rows, time.process_time() - t0, None)
        )
        shown = {d: {k: v for k, v in r.items() if k not in ("d", "p")} for d, r in res.items()}
        results.append({"batch": label, "index": start + j, "n": len(x), **shown})
    if run_id is None:
        import platform

        env = {"python": platform.python_version(), "engine": KIND}
        run_id = st.create_run(PREFIX + cfg["name"], config_hash, json.dumps(suite), seed,
                               len(batches), env, {})  # fmt: skip
    st.write_units(run_id, units)
    if start:  # batches appended to an existing monitor: its unit count grows with them
        from robustlab.store import schema

        with st.engine.begin() as c:
            c.execute(schema.runs.update().where(schema.runs.c.id == run_id)
                      .values(n_units=start + len(batches)))  # fmt: skip
    st.finish_run(run_id, "complete")
    return run_id, results


def _rows(
    name: str, index: int, label: str, n_ref: int, n: int, res: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    from robustlab.core.records import dumps

    rows = []
    for det, r in res.items():
        extra = {k: v for k, v in r.items() if k not in ("d", "p")}
        extra.update(n_reference=n_ref, n_batch=n, alert=float(bool(r["alert"])))
        rows.append({
            "model": name, "replicate": 0, "probe": det, "kind": KIND, "level": float(index),
            "example_id": index, "label": dumps(label), "pred": dumps(bool(r["alert"])),
            "correct": float("nan"), "error": None, "extra": dumps(extra), "meta": "{}",
        })  # fmt: skip
    return rows


def history(st: Any, ref: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A monitor run's info and one row per (batch, detector), in batch order."""
    from robustlab.core.errors import StoreError

    run_id = st.resolve(ref)
    info = st.run_info(run_id)
    if info["suite"].get("kind") != KIND:
        raise StoreError(f"run {run_id} is not a monitor (suite {info['suite_name']!r})")
    df = st.records(run_id)
    finished = {u["key"]: u["finished_at"] for u in info["units"]}
    rows = []
    for rec in df.sort_values(["level", "probe"]).to_dict("records"):
        rows.append({
            "index": int(rec["level"]), "batch": json.loads(rec["label"]),
            "detector": rec["probe"], "statistic": rec["x.statistic"],
            "p_value": rec["x.p_value"], "alert": bool(rec["x.alert"]),
            "threshold": rec["x.threshold"], "n": int(rec["x.n_batch"]),
            "at": finished.get(rec["unit_key"]),
        })  # fmt: skip
    return info, rows


_MEANING = {"ks": "largest D", "mmd": "MMD^2", "psi": "mean PSI", "c2st": "held-out accuracy"}


def html_report(info: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """A small self-contained HTML page: the batches' table and one plot per detector of its
    statistic over batches (alerts marked in red)."""
    from html import escape

    from matplotlib.figure import Figure

    from robustlab.report.plots import _RC, _svg

    dets = list(dict.fromkeys(r["detector"] for r in rows))
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(3.2 * max(len(dets), 1), 3.0), layout="constrained")
        axes = fig.subplots(1, max(len(dets), 1), squeeze=False).ravel()
        for ax, det in zip(axes, dets, strict=False):
            rs = [r for r in rows if r["detector"] == det]
            xs = np.array([r["index"] for r in rs])
            ys = np.array([r["statistic"] for r in rs], dtype=float)
            al = np.array([r["alert"] for r in rs])
            ax.plot(xs, ys, "-", color="0.6")
            ax.scatter(xs[~al], ys[~al], color="tab:blue", label="no alert", zorder=3)
            ax.scatter(xs[al], ys[al], color="tab:red", marker="D", label="alert", zorder=3)
            if det == "psi":
                ax.axhline(rs[0]["threshold"], color="tab:red", ls=":", lw=1)
            ax.set_title(f"{det}: {_MEANING.get(det, 'statistic')}")
            ax.set_xlabel("batch")
            ax.set_xticks(xs, [r["batch"] for r in rs], rotation=45, ha="right", fontsize=7)
        axes[0].legend()
        svg = _svg(fig)
    head = "".join(f"<th>{h}</th>" for h in ("#", "batch", "n", "detector", "statistic",
                                                  "p-value", "alert"))  # fmt: skip
    body = "".join(
        f"<tr><td>{r['index']}</td><td>{escape(str(r['batch']))}</td><td>{r['n']}</td>"
        f"<td>{r['detector']}</td><td>{fmt_num(r['statistic'])}</td><td>{fmt_num(r['p_value'])}</td>"
        f"<td>{'ALERT' if r['alert'] else ''}</td></tr>"
        for r in rows
    )
    title = escape(f"Drift monitor {info['suite']['name']} ({info['id']})")
    ref = escape(json.dumps(info["suite"]["reference"]))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}"
        "</style></head><body>"
        f"<h1>{title}</h1><p>reference: {ref}, {info['suite']['n_reference']} examples, "
        f"feature shape {tuple(info['suite']['shape'])}</p>{svg}"
        f"<table><tr>{head}</tr>{body}</table></body></html>"
    )


def fmt_num(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}"
