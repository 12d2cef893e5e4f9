"""Example inputs of a run: the worst records of a probe, their perturbed inputs regenerated.

Records keep no inputs. For the few examples a report or a dashboard page shows, the clean
inputs are read from the suite's data source and the perturbed ones are made again: the probe's
perturbation (or attack) is re-run on just those examples, in one batch per (model, replicate,
probe, level), with the streams the runner used (:class:`robustlab.core.rng.ExampleRNG` keyed by
suite seed, model, replicate, probe, level and example id: a subset gets the same numbers as its
shard did). For classifiers the regenerated input is evaluated again, and ``reproduced`` says
whether its prediction equals the stored one -- the shown example is the one that was scored.
Generators are never called (cost; an HTTP model may be remote): their perturbed prompts are
shown without a new prediction, and attacks on them are not regenerated (a note says so).

Example::

    rows = pick(records_of_one_group, k=4)          # wrong first, then by stored score
    shown, notes = regenerate(store.run_info(run_id), rows)
    html = gallery(shown)                           # inline PNGs / highlighted diffs
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.report.diffs import code_diff, image_views, word_diff
from robustlab.report.format import e, level_text

DEFAULT_K = 4  # examples shown per probe in the report
WORD_CONTEXT = 12  # unchanged words kept next to each change in a text diff (the rest: …)
SCORE_COLUMNS = ("x.margin", "x.score", "x.similarity")  # lower = closer to failing


@dataclass
class Example:
    """One shown record: its stored outcome and its clean and regenerated inputs."""

    model: str
    replicate: int
    probe: str
    kind: str
    level: float
    example_id: int
    label: Any
    pred: Any  # stored prediction
    correct: float | None
    clean: Any  # tensor [C, H, W], str or problem dict
    perturbed: Any | None = None  # None: the record's input is the clean one (or not rebuilt)
    new_pred: Any = None  # prediction on the regenerated input (classifiers only)
    reproduced: bool | None = None  # new_pred == pred (None: not evaluated)
    style: str = "text"  # "image", "text" or "code"
    domain: tuple[float, float] = (0.0, 1.0)  # the data's value range (images)


def order(g: pd.DataFrame) -> pd.DataFrame:
    """Records worst first: failed, then wrong (lowest ``correct``), then the lowest stored score
    (margin, similarity) where records have one, then replicate and example id."""
    keys = {"_c": g["correct"].astype(float).fillna(-1.0)}
    for c in SCORE_COLUMNS:
        if c in g:
            keys[f"_{c}"] = pd.to_numeric(g[c], errors="coerce").fillna(np.inf)
    g = g.assign(**keys)
    cols = [*keys, "replicate", "example_id"]
    return g.sort_values(cols, kind="stable").drop(columns=list(keys))


def pick(g: pd.DataFrame, k: int = DEFAULT_K) -> pd.DataFrame:
    """The ``k`` worst records of ``g`` (see :func:`order`)."""
    return order(g).head(k)


def regenerate(
    info: dict[str, Any], rows: pd.DataFrame, ctx: Any = None, evaluate: bool = True
) -> tuple[list[Example], list[str]]:
    """The examples of records ``rows`` (any groups) with their inputs rebuilt, in row order, and
    notes on what could not be rebuilt (never raises for a model or data that is unavailable)."""
    from robustlab.runner.context import process_context
    from robustlab.runner.suite import Suite

    ctx = ctx or process_context()
    try:
        suite = Suite.parse(info.get("suite") or {})
    except Exception as exc:  # noqa: BLE001 - an old or foreign suite: nothing to rebuild
        return [], [f"the run's suite cannot be read ({type(exc).__name__}: {exc})"]
    out: dict[int, Example] = {}
    notes: list[str] = []
    rows = rows.reset_index(drop=True)
    for key, g in rows.groupby(["model", "replicate", "probe", "level"], sort=False):
        try:
            got = _group(suite, ctx, key, g, evaluate)
        except Exception as exc:  # noqa: BLE001 - shown as a note, the rest goes on
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            notes.append(f"{key[0]} · {key[2]} @ {level_text(key[3])}: not rebuilt ({msg})")
            continue
        if isinstance(got, str):
            notes.append(f"{key[0]} · {key[2]} @ {level_text(key[3])}: {got}")
            continue
        out.update(zip(g.index.tolist(), got, strict=True))
    return [out[i] for i in sorted(out)], notes


def _spec(items: list[Any], name: str, what: str) -> Any:
    for s in items:
        if s.display == name:
            return s
    raise LookupError(f"{what} {name!r} is not in the run's suite")


def _group(suite: Any, ctx: Any, key: tuple[Any, ...], g: pd.DataFrame, evaluate: bool) -> Any:
    """The examples of one (model, replicate, probe, level) group, or a note (str)."""
    from robustlab.core.registry import perturbations

    model_name, rep, probe_name, level = key
    mspec = _spec(suite.models, model_name, "model")
    pspec = None if probe_name == "clean" else _spec(suite.probes, probe_name, "probe")
    kind = pspec.kind if pspec else "clean"
    if kind in ("diagnosis", "conformal"):
        return f"{kind} records have no single perturbed input"
    if pspec is not None and kind not in ("certifier", "evalset"):  # the planned level itself
        level = next((v for v in pspec.levels if math.isclose(v, level, abs_tol=1e-12)), level)
    data_spec = pspec.data if pspec is not None and pspec.data is not None else suite.data
    task_name = suite.task.name
    classify = task_name == "classification"
    data = ctx.data(data_spec)
    assert data.ids is not None
    where = {int(v): i for i, v in enumerate(data.ids.tolist())}
    ids = [int(i) for i in g["example_id"]]
    if any(i not in where for i in ids):
        return "example ids not found in the rebuilt data (the data source changed)"
    sub = data.take([where[i] for i in ids])
    task = ctx.task(suite.task)
    label = "clean" if pspec is None else pspec.display
    unit_level = None if kind == "certifier" else float(level)
    rng = ExampleRNG.from_seed(seed_from(suite.seed, model_name, rep, label, unit_level), sub.ids)
    x = sub.x
    # a certificate's prediction is not the model's (smoothing votes): not re-evaluated
    evaluate = evaluate and classify and kind != "certifier"
    needs_model = kind == "attack" or evaluate
    if kind == "attack" and not classify:
        return f"attacks on {task_name} tasks are not regenerated (they call the model)"
    model = ctx.model(mspec, int(rep)) if needs_model else None
    if kind == "perturbation":
        pert = ctx.component(perturbations, pspec)
        fields = sub.fields if getattr(task, "takes_fields", False) else {}
        x = task.perturb(pert, sub.x, float(level), rng, **fields)
    elif kind == "attack":
        x = _attack(ctx, suite, task, model, pspec, mspec, int(rep), data_spec, sub, level, rng)
    new_pred = None
    if evaluate:
        with torch.no_grad():
            new_pred = task.evaluate(model, x, sub.y).pred
    style = _style(sub.x, task_name)
    d = getattr(sub, "domain", None)
    dom = (float(d.lo), float(d.hi)) if d is not None else (0.0, 1.0)
    out = []
    for j, r in enumerate(g.to_dict("records")):
        xj = x[j] if x is not None else None
        changed = kind in ("perturbation", "attack")
        ex = Example(
            model=model_name, replicate=int(rep), probe=probe_name, kind=kind, level=float(level),
            example_id=ids[j], label=r["label"], pred=r["pred"], correct=_num(r["correct"]),
            clean=sub.x[j], perturbed=xj if changed else None, style=style, domain=dom,
        )  # fmt: skip
        if new_pred is not None:
            ex.new_pred = new_pred[j]
            ex.reproduced = _same(new_pred[j], r["pred"])
        out.append(ex)
    return out


def _attack(
    ctx: Any, suite: Any, task: Any, model: Any, pspec: Any, mspec: Any, rep: int,
    data_spec: Any, sub: Any, level: float, rng: ExampleRNG,
) -> Any:  # fmt: skip
    """The adversarial inputs of ``sub``, as :meth:`ClassificationTask.attack` makes them."""
    from robustlab.attacks.eot import for_attack
    from robustlab.core.registry import attacks
    from robustlab.core.types import ThreatModel
    from robustlab.runner.fitting import fitted_attack
    from robustlab.runner.plan import WorkUnit

    attack = ctx.component(attacks, pspec)
    if getattr(attack, "fit_split", None) is not None:
        unit = WorkUnit(seed=suite.seed, task=suite.task, model=mspec, replicate=rep,
                        data=data_spec, probe=pspec, level=float(level), shard=0,
                        shard_size=suite.shard_size)  # fmt: skip
        attack, _ = fitted_attack(unit, ctx, attack, model)
    if isinstance(sub.x, list):
        return list(attack(model, list(sub.x), sub.y, float(level), rng=rng).x_adv)
    threat = ThreatModel(pspec.norm, float(level))
    return attack(for_attack(model, attack), sub.x, sub.y, threat, rng=rng).x_adv.detach()


def _style(x: Any, task_name: str) -> str:
    if isinstance(x, torch.Tensor):
        return "image" if x.ndim == 4 and x.shape[1] in (1, 3) else "tensor"
    return "code" if task_name == "code-generation" else "text"


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) or (a is not None and b is not None and str(a) == str(b))


# rendering -------------------------------------------------------------------------------------
def view(ex: Example) -> dict[str, Any]:
    """JSON-able view of ``ex``: its record and its inputs as inline PNGs or highlighted diffs."""
    v: dict[str, Any] = {
        "model": ex.model, "replicate": ex.replicate, "probe": ex.probe, "kind": ex.kind,
        "level": ex.level, "example_id": ex.example_id, "label": ex.label, "pred": ex.pred,
        "correct": ex.correct, "new_pred": ex.new_pred, "reproduced": ex.reproduced,
        "style": ex.style,
    }  # fmt: skip
    if ex.style == "image":
        v.update(image_views(ex.clean, ex.perturbed, ex.domain))
    elif ex.style == "tensor":
        v["diff"] = None
    else:
        v["diff"] = _text_diff(ex.clean, ex.perturbed if ex.perturbed is not None else ex.clean,
                               code=ex.style == "code")  # fmt: skip
    return v


def _text_diff(a: Any, b: Any, code: bool) -> str:
    """Highlighted diff of two inputs: strings, or the changed string fields of problem dicts."""
    if isinstance(a, str) and isinstance(b, str):
        return code_diff(a, b) if code else word_diff(a, b, context=WORD_CONTEXT)
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in a if isinstance(a[k], str) and isinstance(b.get(k), str)]
        changed = [k for k in keys if a[k] != b[k]] or keys[:1]
        return "".join(
            f"<div><span class=muted>{e(k)}</span>{_text_diff(a[k], b[k], code)}</div>"
            for k in changed
        )
    return word_diff(str(a), str(b), context=WORD_CONTEXT)


def gallery(views: list[dict[str, Any]]) -> str:
    """HTML of example views: a figure per image example (clean | perturbed | magnified
    difference), a highlighted diff per text or code example."""
    if not views:
        return ""
    cards = []
    for v in views:
        ok = v["correct"]
        mark = ('<span class="bad">✗</span>' if ok == 0 else '<span class="ok">✓</span>'
                if ok == 1 else ('<span class="bad">failed</span>' if ok is None
                                 else f"{ok:.2f}"))  # fmt: skip
        rep = ""
        if v["reproduced"] is not None:
            rep = (" · <span class=ok>reproduced</span>" if v["reproduced"]
                   else f" · <span class=bad>regenerated prediction {_short(v['new_pred'])}</span>")  # fmt: skip
        cap = (f"#{e(v['example_id'])} · label {_short(v['label'])} · pred {_short(v['pred'])} {mark}"
               f"{rep}")  # fmt: skip
        if v["style"] == "image":
            imgs = [f'<img class="ex" alt="clean" src="{v["clean_png"]}" title="clean">']
            if v.get("perturbed_png"):
                imgs.append(f'<img class="ex perturbed" alt="perturbed" src="{v["perturbed_png"]}"'
                            ' title="perturbed">')  # fmt: skip
                gain = v.get("gain")
                what = f"|x'-x| ×{gain:.3g}" if gain else "|x'-x| = 0"
                imgs.append(f'<img class="ex diff" alt="difference" src="{v["diff_png"]}" '
                            f'title="{e(what)}">')  # fmt: skip
                cap += f' · <span class="nw">{e(what)}</span>'
            cards.append(f'<figure class="ex">{"".join(imgs)}<figcaption>{cap}</figcaption>'
                         "</figure>")  # fmt: skip
        elif v.get("diff") is not None:
            cards.append(f'<div class="ex">{cap}<div class="exdiff">{v["diff"]}</div></div>')
        else:
            cards.append(f'<div class="ex">{cap}</div>')
    return f'<div class="examples">{"".join(cards)}</div>'


def _short(v: Any, n: int = 60) -> str:
    """Escaped text of a label or prediction, cut to ``n`` characters (code tests, completions)."""
    text = v if isinstance(v, str) else str(v)
    return e(text if len(text) <= n else text[: n - 1] + "…") if v is not None else e(v)


CSS = (
    "<style>del.ex,.exdiff del{background:#fde8e7;color:#b42318}"
    ".exdiff ins{background:#e3f6e5;color:#1e6b2a;text-decoration:none}"
    ".exdiff{font-size:13px;white-space:normal;margin:.2em 0 .8em}"
    "pre.codediff{white-space:pre-wrap;background:#f8fafc;padding:.4em;font-size:12px}"
    "pre.codediff .rm{background:#fff5f5}pre.codediff .add{background:#f3fbf4}"
    "figure.ex{display:inline-block;margin:.3em 1em .6em 0;vertical-align:top}"
    "figure.ex figcaption{font-size:12px;max-width:260px}"
    "img.ex{image-rendering:pixelated;border:1px solid #d9e2ec;margin-right:3px}"
    "div.ex{margin:.3em 0 .8em;font-size:12px}.nw{white-space:nowrap}</style>"
)
