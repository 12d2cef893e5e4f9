"""Report sections on representations: the Robustness Index (S20) and SUFO (S41).

Both read the records of ``kind: diagnosis`` probes whose registered name (from the run's suite,
probe label = label or name) is ``robustness-index`` or ``sufo``
(:mod:`robustlab.diagnose.robustness_index`, :mod:`robustlab.diagnose.sufo`); every number is a
function of those records:

* Robustness Index, per (model, probe), over replicates: ``SO / OS`` (de Jong et al. 2025; > 1:
  class dominates the confounder) with a 95 % bootstrap interval over the queries (resampling
  examples, as PathoROB does), ``SO / (SO + OS)``, the k-NN majority vote's accuracy for the
  class and for the confounder, the model's accuracy; a 2-D PCA projection of the embedding per
  model, colour = class, marker = confounder (at most 600 points per panel, the first by id).
* SUFO: probe accuracy per layer (one curve per model), linear-CKA heatmap between the layers,
  CKA to a compare model, CKA to the final model over training epochs, outlier dimensions per
  layer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, num, pct, table
from robustlab.report.sections import diagnosis_records

MAX_POINTS = 600


def _col(g: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(g[name], errors="coerce").to_numpy(dtype=float)


def bootstrap_ratio(
    so: np.ndarray, os_: np.ndarray, draws: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile interval of ``sum(so) / sum(os)`` over resampled queries."""
    n = len(so)
    if n == 0:
        return float("nan"), float("nan")
    draws = max(100, min(draws, 20_000_000 // n))
    idx = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    s, o = so[idx].sum(1), os_[idx].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(o > 0, s / np.where(o > 0, o, 1), np.inf)
    lo, hi = np.percentile(r, [2.5, 97.5])
    return float(lo), float(hi)


def _finite(v: float) -> float | None:
    return v if v is not None and math.isfinite(v) else None


@report_sections.register("robustness-index")
class RobustnessIndexSection:
    """Robustness Index: neighbours of the same class from other sites vs of other classes from
    the same site, and the embedding's 2-D projection."""

    title = "Robustness Index (class vs confounder in embedding space)"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        from robustlab.diagnose.robustness_index import robustness_index

        d = diagnosis_records(df, info, "robustness-index")
        if d.empty or "x.so" not in d:
            return None
        params = {p.get("label") or p["name"]: p.get("params") or {}
                  for p in (info.get("suite") or {}).get("probes", [])}  # fmt: skip
        rows, points = [], []
        for (model, probe), g in d.groupby(["model", "probe"], sort=True):
            g = g[g["x.so"].notna()]
            if g.empty:
                continue
            so, os_ = _col(g, "x.so"), _col(g, "x.os")
            ri = robustness_index(so, os_)
            lo, hi = bootstrap_ratio(so, os_)
            p = params.get(probe, {})
            conf = p.get("confounder", "site")
            rows.append({
                "model": str(model), "probe": str(probe), "k": p.get("k", 10),
                "confounder": conf, "index": _finite(ri["index"]), "lo": _finite(lo),
                "hi": _finite(hi), "normalized": _finite(ri["normalized"]),
                "knn_class": float(np.mean(_col(g, "x.knn_class_ok"))),
                "knn_site": float(np.mean(_col(g, "x.knn_site_ok"))),
                "accuracy": float(np.nanmean(_col(g, "correct"))), "n": len(g),
                "so": int(so.sum()), "os": int(os_.sum()),
                "ss": int(np.nansum(_col(g, "x.ss"))), "oo": int(np.nansum(_col(g, "x.oo"))),
            })  # fmt: skip
            first = g[g["replicate"] == g["replicate"].min()].sort_values("example_id")
            first = first.iloc[:MAX_POINTS]
            mcol = f"m.{conf}"
            points.append({
                "model": str(model), "probe": str(probe),
                "pc1": _col(first, "x.pc1").round(4).tolist(),
                "pc2": _col(first, "x.pc2").round(4).tolist(),
                "label": first["label"].astype(str).tolist(),
                "names": _class_names(first),
                "site": first[mcol].astype(str).tolist() if mcol in first else ["?"] * len(first),
            })  # fmt: skip
        return {"rows": rows, "points": points} if rows else None

    def render(self, data: dict[str, Any]) -> str:
        note = (
            "<p>For each example, its k nearest neighbours in the model's embedding: SO = same "
            "class, other site; OS = other class, same site. Robustness Index = SO / OS (de Jong "
            "et al. 2025): above 1 the embedding is organised more by class than by the "
            "confounder. SO / (SO + OS) is PathoROB's bounded form (0.5 = balance). k-NN "
            "accuracy: the neighbours' majority vote for the class and for the site.</p>"
        )
        body = [
            [e(r["model"]), e(r["probe"]), e(r["confounder"]), str(r["k"]),
             f"{num(r['index'], 3)} <span class=ci>[{num(r['lo'], 3)}, {num(r['hi'], 3)}]</span>",
             num(r["normalized"], 3), pct(r["knn_class"]), pct(r["knn_site"]), pct(r["accuracy"]),
             num(r["so"], 0), num(r["os"], 0), str(r["n"])]
            for r in data["rows"]
        ]  # fmt: skip
        head = ["model", "probe", "confounder", "k", "index SO/OS [95% CI]", "SO/(SO+OS)",
                "k-NN class acc", "k-NN site acc", "model acc", "SO", "OS", "examples"]  # fmt: skip
        return (
            note
            + table(head, body, num_cols=list(range(3, 12)))
            + (
                f"<figure>{_scatter(data['points'])}<figcaption>First two principal components of "
                "each model's embedding: colour = class, marker = site.</figcaption></figure>"
            )
        )


def _class_names(g: pd.DataFrame) -> dict[str, str]:
    """Label -> class name from the examples' ``label`` metadata, where the data has it."""
    if "m.label" not in g:
        return {}
    pairs = zip(g["label"].astype(str), g["m.label"].astype(str), strict=True)
    return {k: v for k, v in pairs if v != "nan"}


def _scatter(points: list[dict[str, Any]]) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        cols = min(2, len(points))
        nrows = math.ceil(len(points) / cols)
        fig = Figure(figsize=(6.4 * cols, 4.2 * nrows), layout="constrained")
        grid = fig.subplots(nrows, cols, squeeze=False).ravel()  # own scales: embeddings differ
        for ax in grid[len(points) :]:
            ax.set_visible(False)
        for ax, p in zip(grid, points, strict=False):
            labels = sorted(set(p["label"]), key=lambda s: (len(s), s))
            sites = sorted(set(p["site"]))
            cmap = matplotlib.colormaps["tab10"]
            x, y = np.array(p["pc1"]), np.array(p["pc2"])
            lab, site = np.array(p["label"]), np.array(p["site"])
            for si, s in enumerate(sites):
                for li, lbl in enumerate(labels):
                    sel = (site == s) & (lab == lbl)
                    if sel.any():
                        ax.scatter(x[sel], y[sel], s=9, color=cmap(li % 10), alpha=0.7,
                                   marker=plots._MARKERS[si % len(plots._MARKERS)], linewidths=0)  # fmt: skip
            for si, s in enumerate(sites):  # legend: markers = sites, colours = classes
                ax.scatter([], [], color="0.3", marker=plots._MARKERS[si % len(plots._MARKERS)],
                           label=f"site {s}")  # fmt: skip
            names = p.get("names") or {}
            for li, lbl in enumerate(labels[:10]):
                ax.scatter([], [], color=cmap(li), marker="s", label=names.get(lbl, lbl))
            ax.set_title(f"{p['model']} ({p['probe']})")
            ax.set_xlabel("PC 1")
            ax.set_ylabel("PC 2")
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        return plots._svg(fig)


@report_sections.register("sufo")
class SufoSection:
    """SUFO: layer-wise probe accuracy, CKA between layers and models, feature dynamics over
    epochs, outlier dimensions."""

    title = "SUFO: probes, representation similarity, dynamics, outliers"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        d = diagnosis_records(df, info, "sufo")
        if d.empty or "x.role" not in d:
            return None
        out: dict[str, Any] = {
            "probes": [],
            "heatmaps": [],
            "compare": [],
            "dynamics": [],
            "layers": [],
        }
        for (model, probe), g in d.groupby(["model", "probe"], sort=True):
            rep0 = g[g["replicate"] == g["replicate"].min()]
            lay = rep0[rep0["x.role"] == "layer"].sort_values("example_id")
            layers = lay["x.layer"].astype(str).tolist()
            test = g[g["x.role"] == "test"]
            label = pd.to_numeric(test["label"], errors="coerce").to_numpy()
            acc = [float(np.mean(_col(test, f"x.probe:{name}") == label))
                   if f"x.probe:{name}" in test else None for name in layers]  # fmt: skip
            out["probes"].append({"model": str(model), "probe": str(probe), "layers": layers,
                                  "accuracy": acc, "n": len(test)})  # fmt: skip
            for _, r in lay.iterrows():
                out["layers"].append({
                    "model": str(model), "probe": str(probe), "layer": str(r["x.layer"]),
                    "dim": int(r["x.dim"]), "n_outliers": int(r["x.n_outliers"]),
                    "outlier_dims": list(r["x.outlier_dims"]) if isinstance(r["x.outlier_dims"], list) else [],
                    "outlier_share": float(r["x.outlier_share"]), "zero_share": float(r["x.zero_share"]),
                })  # fmt: skip
            pairs = g[g["x.role"] == "pair"]
            if pairs.empty:
                continue
            pos = {name: i for i, name in enumerate(layers)}
            own = pairs[pairs["x.group"] == "layers"]
            if len(layers) and not own.empty:
                m = np.eye(len(layers))
                cka = own.groupby(["x.layer_a", "x.layer_b"])["x.cka"].mean()  # over replicates
                for (a, b), v in cka.items():
                    if a in pos and b in pos:
                        m[pos[a], pos[b]] = m[pos[b], pos[a]] = float(v)
                out["heatmaps"].append({"model": str(model), "probe": str(probe), "title": "layers",
                                        "rows": layers, "cols": layers, "cka": m.round(4).tolist()})  # fmt: skip
            comp = pairs[pairs["x.group"] == "compare"]
            if not comp.empty:
                other = str(comp["x.model_b"].iloc[0])
                cols = list(dict.fromkeys(comp["x.layer_b"].astype(str)))
                m = np.full((len(layers), len(cols)), np.nan)
                for (a, b), v in comp.groupby(["x.layer_a", "x.layer_b"])["x.cka"].mean().items():
                    if a in pos:
                        m[pos[a], cols.index(str(b))] = float(v)
                out["compare"].append({"model": str(model), "probe": str(probe),
                                       "title": f"vs {other}", "rows": layers, "cols": cols,
                                       "cka": np.where(np.isnan(m), None, m.round(4)).tolist()})  # fmt: skip
            dyn = pairs[pairs["x.group"] == "epoch"]
            if not dyn.empty:
                mean = dyn.groupby(["x.layer_a", "x.epoch"])[["x.cka", "x.rsa"]].mean()
                series = []
                for name in layers:
                    if name in mean.index.get_level_values(0):
                        s = mean.loc[name]
                        series.append({"layer": name, "epochs": [float(v) for v in s.index],
                                       "cka": s["x.cka"].round(4).tolist(), "rsa": s["x.rsa"].round(4).tolist()})  # fmt: skip
                out["dynamics"].append({"model": str(model), "probe": str(probe), "series": series})
        return out if out["probes"] else None

    def render(self, data: dict[str, Any]) -> str:
        parts = [
            "<p>Linear probes (logistic regression) per layer predict the class from that layer's "
            "features; linear CKA (Kornblith et al. 2019) compares layers' representations of the "
            "same examples (1 = identical up to rotation and scale); RSA correlates their "
            "dissimilarity matrices (in the JSON). Outlier dimensions: mean |activation| above the "
            "layer's mean by the chosen number of standard deviations.</p>",
            f"<figure>{_probe_plot(data['probes'])}<figcaption>Probe accuracy per layer"
            "</figcaption></figure>",
        ]
        maps = data["heatmaps"] + data["compare"]
        if maps:
            parts.append(f"<figure>{_heatmaps(maps)}<figcaption>Linear CKA</figcaption></figure>")
        if data["dynamics"]:
            parts.append(f"<figure>{_dynamics(data['dynamics'])}<figcaption>CKA of each layer "
                         "at an earlier epoch to the final model's</figcaption></figure>")  # fmt: skip
        body = [[e(r["model"]), e(r["probe"]), e(r["layer"]), num(r["dim"], 0),
                 num(r["n_outliers"], 0), e(", ".join(map(str, r["outlier_dims"][:8])) or "-"),
                 pct(r["outlier_share"]), pct(r["zero_share"])] for r in data["layers"]]  # fmt: skip
        head = ["model", "probe", "layer", "dim", "outlier dims", "top outlier dims",
                "outlier share of |activation|", "zero activations"]  # fmt: skip
        parts.append(table(head, body, num_cols=[3, 4, 6, 7]))
        return "\n".join(parts)


def _probe_plot(rows: list[dict[str, Any]]) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        width = max(6.0, 0.5 * max(len(r["layers"]) for r in rows) + 2)
        fig = Figure(figsize=(width, 3.4), layout="constrained")
        ax = fig.subplots()
        # one layer axis when every model has the same layers; else relative depth (a layer
        # index of one model is not a layer of another)
        same = all(r["layers"] == rows[0]["layers"] for r in rows)
        for i, r in enumerate(rows):
            acc = [float("nan") if a is None else a for a in r["accuracy"]]
            n = len(acc)
            xs = list(range(n)) if same else [j / max(n - 1, 1) for j in range(n)]
            ax.plot(xs, acc, marker=plots._MARKERS[i % len(plots._MARKERS)],
                    label=f"{r['model']} ({r['probe']})", clip_on=False)  # fmt: skip
        if same:
            ax.set_xticks(range(len(rows[0]["layers"])), rows[0]["layers"], rotation=40, ha="right")
        else:
            ax.set_xlabel("relative depth (input = 0, output = 1; layers in the table below)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("probe accuracy")
        ax.legend(fontsize=8)
        return plots._svg(fig)


def _heatmaps(maps: list[dict[str, Any]]) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    from robustlab.report import plots

    with matplotlib.rc_context({**plots._RC, "axes.grid": False}):
        cols = min(2, len(maps))
        rows = math.ceil(len(maps) / cols)
        fig = Figure(figsize=(5.2 * cols, 4.6 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax in axes[len(maps) :]:
            ax.set_visible(False)
        for ax, h in zip(axes, maps, strict=False):
            m = np.array(
                [[np.nan if v is None else v for v in row] for row in h["cka"]], dtype=float
            )
            im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
            ax.set_xticks(range(len(h["cols"])), h["cols"], rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(h["rows"])), h["rows"], fontsize=7)
            ax.set_title(f"{h['model']}: {h['title']}")
            fig.colorbar(im, ax=ax, shrink=0.8, label="CKA")
        return plots._svg(fig)


def _dynamics(runs: list[dict[str, Any]]) -> str:
    import matplotlib

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        fig, axes = plots._figure(len(runs), width=5.5, height=3.4)
        for ax, r in zip(axes, runs, strict=True):
            for i, s in enumerate(r["series"]):
                ax.plot(s["epochs"], s["cka"], marker=plots._MARKERS[i % len(plots._MARKERS)],
                        label=s["layer"], clip_on=False)  # fmt: skip
            ax.set_title(f"{r['model']} ({r['probe']})")
            ax.set_xlabel("epoch")
            ax.set_ylabel("CKA to the final model")
            ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize=6, ncol=2)
        return plots._svg(fig)
