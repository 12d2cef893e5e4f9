"""The FastAPI application of ``robustlab serve`` (pages described in :mod:`robustlab.serve`)."""

from __future__ import annotations

import hmac
import math
from html import escape
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from robustlab.core.errors import RobustlabError
from robustlab.report.examples import CSS as ex_css
from robustlab.report.examples import gallery as ex_gallery
from robustlab.report.format import e, level_text, num, table
from robustlab.report.html import _CSS
from robustlab.serve.drill import link_cells
from robustlab.serve.views import (
    EXAMPLES_SHOWN,
    REGENERATED,
    REGENERATED_MAX,
    Filters,
    Views,
    check_metric,
    thumbnails,
)

COOKIE = "robustlab_token"
_EXTRA_CSS = """
header.bar{border-bottom:2px solid #d9e2ec;margin-bottom:1em;padding-bottom:.4em}
header.bar a{margin-right:1.2em;font-weight:600}
form.filters{margin:.6em 0}form.filters label{margin-right:1em}
td.regression{background:#fde8e7 !important;color:#b42318;font-weight:600}
td.improvement{color:#2f7d32}
img.thumb{image-rendering:pixelated;border:1px solid #d9e2ec}
a.drill-cell{text-decoration:underline dotted}
.report-embed{border-top:3px solid #d9e2ec;margin-top:2em}
"""


def make_app(store: Any, token: str | None = None) -> FastAPI:
    """The dashboard over ``store`` (opened with :func:`robustlab.serve.open_store`); with
    ``token`` every request must carry it (header, ``?token=`` or the cookie it sets)."""
    views = Views(store)
    app = FastAPI(title="robustlab", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Response:
        if token is None:
            return await call_next(request)
        auth = request.headers.get("authorization", "")
        given = [
            request.headers.get("x-robustlab-token"),
            auth[7:] if auth.lower().startswith("bearer ") else None,
            request.query_params.get("token"),
            request.cookies.get(COOKIE),
        ]
        if not any(g and hmac.compare_digest(g.encode(), token.encode()) for g in given):
            return PlainTextResponse("a valid token is required (?token=...)", status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.exception_handler(RobustlabError)
    async def user_error(request: Request, exc: RobustlabError) -> HTMLResponse:
        body = f'<p class="warn">{escape(str(exc))}</p><p><a href="/">all runs</a></p>'
        return HTMLResponse(_page("error", body), status_code=404)

    @app.exception_handler(RequestValidationError)
    async def bad_query(request: Request, exc: RequestValidationError) -> HTMLResponse:
        what = "; ".join(
            f"{'.'.join(str(x) for x in err.get('loc', ())[1:])}: {err.get('msg', '')}"
            for err in exc.errors()
        )
        body = f'<p class="warn">bad request: {escape(what)}</p><p><a href="/">all runs</a></p>'
        return HTMLResponse(_page("error", body), status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def runs_page(suite: str = "", status: str = "", model: str = "") -> str:
        rows = views.runs()
        suites = sorted({r["suite_name"] for r in rows})
        statuses = sorted({r["status"] for r in rows})
        models = sorted({m for r in rows for m in r["models"]})
        shown = [
            r
            for r in rows
            if (not suite or r["suite_name"] == suite)
            and (not status or r["status"] == status)
            and (not model or model in r["models"])
        ]
        form = (
            '<form class="filters" method="get">'
            + _select("suite", suites, suite)
            + _select("status", statuses, status)
            + _select("model", models, model)
            + '<button type="submit">filter</button> <a href="/">clear</a></form>'
        )
        body = [
            [
                f'<a href="/run/{escape(r["id"])}">{e(r["id"])}</a>',
                f'<a href="/suite/{_q(r["suite_name"])}">{e(r["suite_name"])}</a>',
                e(r["status"]),
                e(", ".join(r["models"])),
                num(r["n_units"], 0),
                num(r["elapsed"], 1),
                e(r["message"] or ""),
            ]
            for r in shown
        ]
        head = ["run", "suite (over time)", "status", "models", "units", "seconds", "message"]
        compare = ""
        if len(shown) >= 2:
            ids = [r["id"] for r in shown]
            compare = (
                '<h2>Compare two runs</h2><form method="get" action="/compare">'
                + _select("a", ids, ids[1], blank=False)
                + _select("b", ids, ids[0], blank=False)
                + '<button type="submit">compare</button></form>'
            )
        html = (
            f"<h1>Runs</h1><p class=muted>{len(shown)} of {len(rows)} runs in "
            f"{e(store.url)}</p>{form}<div class=scroll id=runs>{table(head, body)}</div>{compare}"
        )
        return _page("runs", html)

    @app.get("/run/{run_id}", response_class=HTMLResponse)
    def run_page(run_id: str) -> str:
        info = views.info(run_id)
        groups = views.groups(info)
        body = []
        for r in groups.to_dict("records") if len(groups) else []:
            link = "/run/{}/examples?{}".format(
                escape(info["id"]),
                escape(urlencode({"model": r["model"], "probe": r["probe"], "level": r["level"]})),
            )
            acc = f"{r['value']:.3f} [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]"
            body.append(
                [e(r["model"]), e(r["kind"]), e(r["probe"]), e(level_text(r["level"])),
                 f'<a class="drill" href="{link}">{e(acc)}</a>', num(r["n"], 0)]
            )  # fmt: skip
        head = ["model", "kind", "probe", "level", "accuracy [95% CI] (examples)", "n"]
        drill = (
            table(head, body, num_cols=(4, 5))
            if body
            else '<p class="muted">No evaluation records in this run.</p>'
        )
        report = views.report_html(info)
        inner = report[report.index("<body>") + 6 : report.rindex("</body>")]
        rows = groups.to_dict("records") if len(groups) else []
        inner = link_cells(
            inner, info["id"], rows, views.slices(info)
        )  # report cells drill down to their examples
        html = (
            f'<h1>Run {e(info["id"])}</h1><p>suite <a href="/suite/{_q(info["suite_name"])}">'
            f"{e(info['suite_name'])}</a> · status {e(info['status'])}</p>"
            f"<h2>Groups: click an accuracy for its examples</h2><div id=groups>{drill}</div>"
            f'<div class="report-embed" id=report>{inner}</div>'
        )
        return _page(f"run {info['id']}", html)

    @app.get("/run/{run_id}/examples", response_class=HTMLResponse)
    def examples_page(
        run_id: str,
        model: str,
        probe: str,
        level: float | None = None,
        show: int = REGENERATED,
        slice_: str | None = Query(None, alias="slice"),
        value: str | None = None,
        member: str | None = None,
    ) -> str:
        info = views.info(run_id)
        where = Filters(slice_, value, member)
        filtered = where != Filters()
        df, total = views.examples(info, model, probe, level, where if filtered else None)
        show = max(0, min(show, REGENERATED_MAX))
        shown, notes = views.regenerated(info, df.head(show)) if show else ([], [])
        gallery = "".join(f'<p class="warn">{e(n)}</p>' for n in notes) + ex_gallery(shown)
        query = {"model": model, "probe": probe, "level": level, "slice": slice_,
                 "value": value, "member": member}  # fmt: skip
        query = {k: v for k, v in query.items() if v is not None}
        if shown:
            more_q = urlencode({**query, "show": min(2 * show, REGENERATED_MAX)})
            gallery = (
                f"<h2>The first {len(shown)} examples, worst first</h2><p class=muted>inputs "
                "regenerated with the unit's seed (images: clean | perturbed | |x'-x| magnified "
                "to the full range; text and code: removed in red, added in green)"
                + (f' · <a href="/run/{escape(info["id"])}/examples?{escape(more_q)}">show more'
                   "</a>" if show < REGENERATED_MAX and total > show else "")
                + f"</p>{ex_css}<div id=gallery>{gallery}</div>"
            )  # fmt: skip
        extras = [c for c in df.columns if c.startswith("x.")]
        thumbs = thumbnails(views, info, probe, [int(i) for i in df["example_id"]])
        head = ["replicate", "example id", "label", "prediction", "correct", "error", *extras]
        head += ["clean input"] if thumbs else []
        head += ["level"] if level is None else []  # every level of the probe: say which
        body = [
            [num(r["replicate"], 0), e(r["example_id"]), e(r["label"]), e(r["pred"]),
             _correct(r["correct"]), e(r["error"] or ""), *(_extra(r[c]) for c in extras),
             *([_img(thumbs.get(int(r["example_id"])))] if thumbs else []),
             *([e(level_text(r["level"]))] if level is None else [])]
            for r in df.to_dict("records")
        ]  # fmt: skip
        acc = float(df["correct"].fillna(0).mean()) if total == len(df) else None
        more = f" (the first {EXAMPLES_SHOWN}, wrong first)" if total > len(df) else ""
        html = (
            f"<h1>Examples: {e(model)} · {e(probe)} · "
            f"{'every level' if level is None else 'level ' + e(level_text(level))}"
            f"{' · ' + e(where.text()) if filtered else ''}</h1>"
            f'<p>run <a href="/run/{escape(info["id"])}">{e(info["id"])}</a> · {total} records'
            f"{more}{'' if acc is None else f' · accuracy {acc:.3f}'}</p>"
            f"{gallery}<h2>Records</h2>"
            f"<div class=scroll id=examples>{table(head, body, num_cols=(0, 1, 4))}</div>"
        )
        return _page("examples", html)

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(a: str, b: str, metric: str = "accuracy") -> str:
        ia, ib = views.info(a), views.info(b)
        df = views.compare(ia, ib, check_metric(metric))
        body = []
        for r in df.to_dict("records") if len(df) else []:
            mark, cls = _mark(r)
            body.append(
                [*([e(r["model"])] if "model" in r else []), e(r["kind"]), e(r["probe"]),
                 e(level_text(r["level"])), num(r["a"]), num(r["b"]), _signed(r["diff"]),
                 "" if _nan(r["ci_lo"]) else f"[{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}]",
                 "" if _nan(r["q_value"]) else f"{r['q_value']:.3g}", _td(mark, cls)]
            )  # fmt: skip
        head = [*(["model"] if len(df) and "model" in df else []), "kind", "probe", "level",
                "A", "B", "B - A", "95% CI", "q", ""]  # fmt: skip
        html = (
            f"<h1>A = {e(ia['id'])} vs B = {e(ib['id'])}</h1><p class=muted>{e(metric)}; "
            "better/worse: permutation test (paired where the runs share examples), "
            "Benjamini-Hochberg FDR 5 % over all compared rows (q = adjusted p)</p>"
            f"<div id=compare>{_table(head, body)}</div>"
        )
        return _page("compare", html)

    @app.get("/suite/{suite}", response_class=HTMLResponse)
    def suite_page(suite: str, metric: str = "accuracy") -> str:
        h = views.history(suite, check_metric(metric))
        infos = h["infos"]
        head = [*h["keys"], *(f"{_date(i)} {i['id']}" for i in infos)]
        body = []
        for k in h["rows"]:
            cells = [
                e(level_text(v)) if c == "level" else e(v)
                for c, v in zip(h["keys"], k, strict=True)
            ]
            for i in infos:
                cell = h["cells"][k].get(i["id"])
                if cell is None:
                    cells.append("–")
                    continue
                text = f"{cell['value']:.3f} <span class=ci>[{cell['lo']:.3f}, {cell['hi']:.3f}]</span>"
                cls = ""
                if cell.get("regression"):
                    text += f" ▼ regression {cell['diff']:+.3f} (q {cell['q']:.2g})"
                    cls = "regression"
                elif cell.get("improvement"):
                    text += f" ▲ {cell['diff']:+.3f}"
                    cls = "improvement"
                cells.append(_td(text, cls))
            body.append(cells)
        n_reg = sum(c.get("regression", False) for k in h["rows"] for c in h["cells"][k].values())
        notes = "".join(f'<p class="warn">{e(n)}</p>' for n in h["notes"])
        pairs = "".join(
            f'<a href="/compare?{escape(urlencode({"a": p["id"], "b": c["id"], "metric": metric}))}">'
            f"{e(p['id'])} → {e(c['id'])}</a> "
            for p, c in zip(infos, infos[1:], strict=False)
        )
        plot = h["plot"]
        html = (
            f"<h1>Suite {e(suite)} over time</h1><p class=muted>{len(infos)} runs ordered by "
            f"date; {e(metric)} with 95% bootstrap CI (<code>?metric=</code> picks another);"
            " ▼ regression: worse than the run before, "
            "significant after Benjamini-Hochberg FDR control at 5 % (paired permutation tests "
            f"over every compared probe and level)</p><p id=regressions>{n_reg} regression(s)"
            f"</p>{notes}<p>compare consecutive runs: {pairs}</p>"
            f"{f'<figure>{plot}</figure>' if plot else ''}"
            f"<div class=scroll id=history>{_table(head, body)}</div>"
        )
        return _page(f"suite {suite}", html)

    return app


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>robustlab · {escape(title)}</title>'
        f"<style>{_CSS}{_EXTRA_CSS}</style></head><body>"
        '<header class="bar"><a href="/">runs</a></header>\n'
        f"{body}\n</body></html>\n"
    )


def _q(v: str) -> str:
    from urllib.parse import quote

    return escape(quote(str(v), safe=""))


def _select(name: str, options: list[str], chosen: str, blank: bool = True) -> str:
    opts = ['<option value="">all</option>'] if blank else []
    opts += [
        f'<option value="{escape(o)}"{" selected" if o == chosen else ""}>{escape(o)}</option>'
        for o in options
    ]
    return f'<label>{escape(name)} <select name="{escape(name)}">{"".join(opts)}</select></label>'


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _signed(v: Any) -> str:
    return "" if _nan(v) else f"{v:+.3f}"


def _correct(v: Any) -> str:
    if _nan(v):
        return '<span class="bad">failed</span>'
    return (
        '<span class="ok">✓</span>'
        if v == 1
        else ('<span class="bad">✗</span>' if v == 0 else f"{v:.3f}")
    )


def _extra(v: Any) -> str:
    if _nan(v):
        return ""
    return f"{v:.4g}" if isinstance(v, float) else e(v)


def _img(uri: str | None) -> str:
    return f'<img class="thumb" alt="example" src="{uri}">' if uri else ""


def _mark(r: dict[str, Any]) -> tuple[str, str]:
    if r["status"] != "ok":
        return r["status"], ""
    if r["significant"]:
        better = (r["diff"] > 0) == r["higher_is_better"]
        return ("better", "improvement") if better else ("worse", "regression")
    return "n.s.", ""


def _td(html: str, cls: str) -> str | tuple[str, str]:
    """A cell with a class (``regression``/``improvement``) for :func:`_table`."""
    return (html, cls) if cls else html


def _table(head: list[str], body: list[list[Any]], num_cols: tuple[int, ...] = ()) -> str:
    """:func:`robustlab.report.format.table` with cells that may carry a class: ``(html, cls)``."""
    th = "".join(
        f"<th{' class=num' if i in num_cols else ''}>{escape(h)}</th>" for i, h in enumerate(head)
    )
    rows = []
    for r in body:
        tds = []
        for i, c in enumerate(r):
            html, cls = c if isinstance(c, tuple) else (c, "")
            classes = " ".join(x for x in ("num" if i in num_cols else "", cls) if x)
            tds.append(f'<td class="{classes}">{html}</td>' if classes else f"<td>{html}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _date(info: dict[str, Any]) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(info["created_at"]))
