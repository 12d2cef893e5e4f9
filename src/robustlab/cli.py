"""The ``robustlab`` command line: demo, run, list, runs, show, compare, gate, report, serve,
validate, train.

Every user error prints one line naming the culprit and exits with status 2; the store is never
left half-written (units are written atomically).

Start-up is kept light: this module imports typer, rich and the registries' names only; torch,
pandas, SQLAlchemy and the components are imported inside the commands that need them, so
``--help``, ``list`` (from the cached catalog, :mod:`robustlab.core.catalog`) and ``runs`` (a
local store read with :mod:`sqlite3`) take a fraction of a second
(``tests/test_cli_startup.py``, ``benchmarks/cli_startup.py``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from robustlab.core.errors import ConfigError, RobustlabError
from robustlab.core.registry import REGISTRIES

app = typer.Typer(
    help="Measure, certify and improve the robustness of ML models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_HOME = "robustlab-runs"
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Store path or SQLAlchemy URL [default: robustlab-runs/store.db, or $ROBUSTLAB_STORE]",
    ),
]


def _store_location(store: str | None) -> str:
    return store or os.environ.get("ROBUSTLAB_STORE") or str(Path(DEFAULT_HOME) / "store.db")


def _open_store(store: str | None) -> Any:
    from robustlab.store import Store

    return Store(_store_location(store))


# exit statuses (documented in README "Exit status"): 2 = bad input, nothing run or stored
EXIT_ERRORS = 3  # the run finished and is stored, but units failed or examples errored
EXIT_INTERRUPTED = 130


def _report_dir(store: str | None, out_dir: str | None) -> str:
    """``--out``, else ``reports/`` next to a store file, else ``robustlab-runs/reports``: a
    store URL never becomes a path (it may hold a password)."""
    if out_dir:
        return out_dir
    loc = _store_location(store)
    if "://" in loc:
        return str(Path(DEFAULT_HOME) / "reports")
    return str(Path(loc).expanduser().parent / "reports")


def user_errors(fn: F) -> F:
    """Turn robustlab errors into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RobustlabError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _apply_overrides(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply ``--set a.b[0].c=value`` overrides (see :mod:`robustlab.runner.loading`)."""
    from robustlab.runner.loading import apply_overrides

    return apply_overrides(data, sets)


def _load_suite(path: str, sets: list[str], seed: int | None) -> Any:
    from robustlab.runner.loading import load_suite

    return load_suite(path, sets, seed)


def _execute(suite: Any, store: str | None, engine: str, ray_address: str | None, new: bool,
             out_dir: str | None, progress: bool,
             validated: dict[str, str] | None = None, budget: Any = None) -> str:  # fmt: skip
    from robustlab.runner import make_engine, run_suite
    from robustlab.store.location import missing_folders, writable_folder

    new_folders = missing_folders(_report_dir(store, out_dir))
    reports = writable_folder(_report_dir(store, out_dir), "report folder")  # before any work
    try:
        st = _open_store(store)
    except RobustlabError:
        for d in new_folders:  # a store that cannot be opened leaves nothing behind
            d.rmdir()
        raise
    try:
        run_id = run_suite(
            suite, st, engine=make_engine(engine, ray_address), resume=not new,
            progress=progress, validated=validated, budget=budget,
        )  # fmt: skip
    except KeyboardInterrupt:
        err.print("interrupted: finished units are stored; rerun the same command to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    info = st.run_info(run_id)
    df = _print_summary(st, run_id, info["units"])
    html = _write_report(st, run_id, str(reports))
    out.print(f"\nrun [bold]{run_id}[/] ({info['status']}) stored in {escape(st.url)}")
    if html:
        out.print(f"report: {html}")
    if info["status"] == "interrupted":  # a --budget stop: finished units are stored
        err.print(f"[yellow]stopped:[/] {escape(info['message'] or '')}", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    failed = sum(u["status"] == "failed" for u in info["units"])
    errored = int(df["error"].notna().sum()) if "error" in df else 0
    if failed or errored:
        err.print(
            f"[yellow]warning:[/] {failed} of {info['n_units']} units failed; {errored} of "
            f"{len(df)} example records errored (see `robustlab show {run_id}`); "
            f"exit status {EXIT_ERRORS}",
            highlight=False,
        )
        raise typer.Exit(EXIT_ERRORS)
    return run_id


def _write_report(st: Any, run_id: str, out_dir: str) -> Path | None:
    try:
        from robustlab.report import write_report
    except ImportError:  # pragma: no cover - report module missing in a partial install
        return None
    html, _ = write_report(st, run_id, out_dir)
    return html


def _print_summary(st: Any, run_id: str, units: list[dict[str, Any]]) -> Any:
    """Print the accuracy table of a run (and keep it for ``show``); returns its records."""
    from robustlab.store import summary_cache

    table, df = _summary_table(st, run_id)
    summary_cache.save(st.url, run_id, units, table)
    _print_table(table)
    return df


def _summary_table(st: Any, run_id: str) -> tuple[dict[str, Any], Any]:
    """The accuracy table of a run as printable cells (``rows`` empty: no records), and the
    records it summarises."""
    from robustlab.metrics import summarize

    df = st.records(run_id)
    table: dict[str, Any] = {"title": f"accuracy, 95% bootstrap CI (run {run_id})", "rows": []}
    if df.empty:
        return table, df
    from robustlab.core.records import without_diagnoses

    full, df = df, without_diagnoses(df)
    if len(df) < len(full):  # their scores are not accuracies: each has a report section
        names = full.loc[full["kind"] == "diagnosis", "probe"].astype(str).unique()
        table["note"] = f"diagnoses (see the report): {', '.join(sorted(names))}"
    if df.empty:
        return table, full
    s = summarize(df, ["accuracy"], by=("model", "kind", "probe", "level"), n_boot=500)
    many = s["model"].nunique() > 1
    keys = ["model", "kind", "probe", "level"]
    # errored records count as wrong in the accuracy: show how many there are, next to it
    errored = df["error"].notna().groupby([df[k] for k in keys]).sum() if "error" in df else None
    show_errors = errored is not None and bool(errored.sum())
    table["columns"] = (["model"] if many else []) + [
        "probe",
        "level",
        "accuracy [95% CI]",
        "seed std",
        "n",
        *(["errored"] if show_errors else []),
    ]
    order = {"clean": 0, "evalset": 1, "perturbation": 2, "attack": 3, "certifier": 4}
    s = s.sort_values(
        ["model", "kind", "probe", "level"],
        key=lambda c: c.map(order) if c.name == "kind" else c,
    )
    for r in s.itertuples():
        std = "" if r.replicate_std != r.replicate_std else f"{r.replicate_std:.3f}"
        acc = escape(f"{r.value:.3f} [{r.ci_lo:.3f}, {r.ci_hi:.3f}]")
        cells = [r.probe, f"{r.level:g}", acc, std, str(r.n)]
        if show_errors:
            k = errored.get((r.model, r.kind, r.probe, r.level), 0)
            cells.append(f"[red]{k}[/]" if k else "0")
        table["rows"].append([*([r.model] if many else []), *cells])
    return table, full


def _print_table(table: dict[str, Any]) -> None:
    """Print a table made by :func:`_summary_table` (or kept by the summary cache)."""
    if table["rows"]:
        shown = Table(title=table["title"], title_justify="left")
        for col in table["columns"]:
            shown.add_column(col, justify="left" if col in ("model", "probe") else "right")
        for row in table["rows"]:
            shown.add_row(*row)
        out.print(shown)
    elif not table.get("note"):
        out.print("no records")
    if table.get("note"):
        out.print(escape(table["note"]))


@app.command()
@user_errors
def demo(
    store: StoreOpt = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Report folder")] = None,
    quick: Annotated[bool, typer.Option(help="One training seed and fewer levels (fast)")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars")] = True,
) -> None:
    """Train a small CNN on scikit-learn's digits, run the default suite, store it and report."""
    sets = []
    if quick:
        sets = ["models.0.replicates=[0]", "probes.5.levels=[0.1]", "probes.6.levels=[0.1, 0.2]"]
    suite = _load_suite("demo", sets, None)
    _execute(suite, store, "local", None, False, out_dir, progress)


@app.command()
@user_errors
def run(
    suite: Annotated[str, typer.Argument(help="Suite YAML file, or the name of a bundled suite")],
    store: StoreOpt = None,
    engine: Annotated[str, typer.Option(help="local or ray")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Address of a running Ray cluster")
    ] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new run instead of resuming")] = False,
    seed: Annotated[int | None, typer.Option(help="Override the suite's seed")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a suite field: a.b=value")
    ] = None,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Allow unpickling models you trust (file, hf-*)")
    ] = False,
    out_dir: Annotated[str | None, typer.Option("--out", help="Report folder")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars")] = True,
    budget: Annotated[
        str | None,
        typer.Option(
            help="Stop cleanly (resumable, exit status 130) once this is spent: 30s, 5m, 1h or "
            "'1000 units'; checked between units"
        ),
    ] = None,
) -> None:
    """Run a suite (resuming an unfinished run of the same suite) and write its report."""
    from robustlab.runner.budget import Budget
    from robustlab.runner.context import process_context
    from robustlab.runner.validation import validate_models, validate_suite

    limit = Budget.parse(budget) if budget is not None else None  # before any work
    s = _load_suite(suite, set_ or [], seed)
    validate_suite(s)  # before the store is opened: a refused suite leaves no trace
    if allow_pickle:
        data = s.model_dump(mode="json")
        import inspect

        from robustlab.core.registry import models as model_registry

        for m in data["models"]:  # every model factory with an allow_pickle option (file, hf-*)
            if "allow_pickle" in inspect.signature(model_registry.get(m["name"])).parameters:
                m["params"]["allow_pickle"] = True
        s = type(s).parse(data, suite)
    # loaded (cached for the run), still before the store; not repeated by run_suite
    fingerprints = validate_models(s, process_context())
    _execute(s, store, engine, ray_address, new, out_dir, progress, fingerprints, limit)


@app.command("plan")
@user_errors
def plan_(
    suite: Annotated[str, typer.Argument(help="Suite YAML file, or the name of a bundled suite")],
    seed: Annotated[int | None, typer.Option(help="Override the suite's seed")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a suite field: a.b=value")
    ] = None,
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate",
            help="Also time a few model passes on the suite's data and estimate the run's time",
        ),
    ] = False,
) -> None:
    """Show a suite's work units and model passes (forward/backward, LLM prompts and tokens)."""
    from robustlab.runner.estimate import estimate as estimate_cost

    s = _load_suite(suite, set_ or [], seed)
    est = estimate_cost(s, calibrate=estimate)
    table = Table(title=f"plan of suite {s.name!r}: {len(est.units)} units", title_justify="left")
    rows = est.by_probe()
    llm = any(r["prompts"] for r in rows)
    cols = ["model", "probe", "kind", "units", "forward", "backward"]
    cols += ["prompts", "prompt tokens", "completion tokens"] if llm else []
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "probe", "kind") else "right")
    for r in rows:
        unknown = f" ({r['unknown']} unknown)" if r["unknown"] else ""
        cells = [r["model"], r["probe"], r["kind"], str(r["units"]) + unknown,
                 f"{r['forward']:,}", f"{r['backward']:,}"]  # fmt: skip
        if llm:
            cells += [f"{r[k]:,}" for k in ("prompts", "prompt_tokens", "completion_tokens")]
        table.add_row(*(escape(c) for c in cells))
    out.print(table)
    t = est.totals
    out.print(
        f"total: {len(est.units)} units, {t['forward']:,} forward passes ({t['backward']:,} with "
        "a backward pass), counted in examples"
        + (f", {t['prompts']:,} prompts" if t["prompts"] else "")
    )
    if est.unknown:
        out.print(
            f"{len(est.unknown)} units have an unknown cost (their component declares no cost "
            "hook): not counted above"
        )
    if est.cost_usd is not None:
        out.print(f"LLM cost: at most ${est.cost_usd:.4f} (tokens x the models' prices)")
    if est.seconds is not None:
        for name, t_ in est.timings.items():
            fb = f", forward+backward {t_['backward'] * 1e3:.3f} ms" if "backward" in t_ else ""
            out.print(
                f"calibration {escape(name)}: forward {t_['forward'] * 1e3:.3f} ms{fb} per example"
            )
        out.print(f"estimated time: {est.seconds:.1f} s (model passes and per-unit overhead; "
                  "model loading, validation and the report not included)")  # fmt: skip
        if est.uncalibrated:
            out.print(f"not timed (generators: their time is the server's): "
                      f"{escape(', '.join(est.uncalibrated))}")  # fmt: skip
        if est.unknown:
            out.print(f"the {len(est.unknown)} units of unknown cost are not in the time either")


@app.command()
@user_errors
def validate(
    suite: Annotated[str, typer.Argument(help="Suite YAML file, or the name of a bundled suite")],
    seed: Annotated[int | None, typer.Option(help="Override the suite's seed")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a suite field: a.b=value")
    ] = None,
    load_models: Annotated[
        bool,
        typer.Option(
            "--models",
            help="Also load (or train, cached) the models and check them against the probes and "
            "data, as run does before it opens the store",
        ),
    ] = False,
) -> None:
    """Check a suite (names, parameters, level domains, data columns, size) without running it."""
    from robustlab.runner.context import process_context
    from robustlab.runner.validation import validate_models, validate_suite

    s = _load_suite(suite, set_ or [], seed)
    validate_suite(s)
    if load_models:
        validate_models(s, process_context())
    checked = " (models loaded and checked)" if load_models else ""
    out.print(
        f"suite {s.name!r} is valid: {len(s.models)} model(s), {len(s.probes)} probe(s){checked}"
    )


@app.command("list")
@user_errors
def list_(
    kind: Annotated[str | None, typer.Argument(help="attacks, perturbations, ...")] = None,
) -> None:
    """Show registered components with one-line docs."""
    from robustlab.core.catalog import listing

    kinds = [kind] if kind else list(REGISTRIES)
    for k in kinds:
        if k not in REGISTRIES:
            import difflib

            close = difflib.get_close_matches(k, REGISTRIES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown component kind {k!r}{hint} (kinds: {', '.join(REGISTRIES)})"
            )
    for k, entries in listing(kinds).items():
        table = Table(title=k, show_header=False, title_justify="left")
        for name, doc in entries:
            table.add_row(f"[bold]{name}[/]", escape(doc))
        out.print(table)


@app.command()
@user_errors
def runs(store: StoreOpt = None) -> None:
    """List the runs in the store, newest first."""
    from robustlab.store.readonly import run_rows

    fast = run_rows(_store_location(store))  # a local store file, without SQLAlchemy and pandas
    if fast is None:
        st = _open_store(store)
        url, rows = st.url, st.runs().to_dict("records")
    else:
        url, rows = fast
    table = Table(title=f"runs in {escape(url)}")
    for col in ("id", "suite", "status", "units", "seconds", "message"):
        table.add_column(col, no_wrap=col == "id")
    for r in rows:  # Python values, None where missing (never NaN)
        cells = (r["id"], r["suite_name"], r["status"], r["n_units"], r["elapsed"], r["message"])
        table.add_row(*(escape(_cell(v)) for v in cells))
    out.print(table)


def _cell(value: Any) -> str:
    """A table cell: missing values empty, floats with one decimal."""
    if value is None:
        return ""
    return f"{value:.1f}" if isinstance(value, float) else str(value)


@app.command()
@user_errors
def show(
    run_id: Annotated[str, typer.Argument(help="Run id, prefix, or 'latest'")],
    store: StoreOpt = None,
) -> None:
    """Show a run: suite, environment, fingerprints, units and summary."""
    from robustlab.store import readonly, summary_cache

    st = None
    fast = readonly.run_info(_store_location(store), run_id)  # a local file: no SQLAlchemy
    if fast is None:
        st = _open_store(store)
        url, info = st.url, st.run_info(st.resolve(run_id))
    else:
        url, info = fast
    rid = info["id"]
    out.print(
        f"[bold]run {rid}[/]  suite {info['suite_name']}  status {info['status']}  seed {info['seed']}"
    )
    if info["status"] in ("running", "interrupted") and info.get("heartbeat_at"):
        import time

        ago = time.time() - info["heartbeat_at"]
        out.print(
            f"owner: pid {info['owner_pid']} on {info['owner_host']}, last heartbeat {ago:.0f} s ago"
            + ("; rerun the same suite to resume" if info["status"] == "interrupted" else "")
        )
    env = dict(info["environment"] or {})
    training = env.pop("training", None) or {}
    out.print(f"environment: {env}")
    for name, prov in training.items():  # the full history is in the report and run_info
        spec, last = prov.get("spec") or {}, (prov.get("history") or [{}])[-1]
        accs = ", ".join(
            f"{k} {last[k]:.3f}" for k in ("clean_acc", "pgd_acc") if last.get(k) is not None
        )
        out.print(
            f"trained {name}: {(spec.get('trainer') or {}).get('name')} on "
            f"{(spec.get('data') or {}).get('name')}, {prov.get('epochs_run')} epochs"
            + (f" (held-out {accs})" if accs else "")
        )
    out.print(f"models: {info['fingerprints']}")
    failed = [u for u in info["units"] if u["status"] == "failed"]
    out.print(f"units: {len(info['units'])}/{info['n_units']} finished, {len(failed)} failed")
    for u in failed:
        out.print(f"  [red]failed[/] {u['description']}: {u['error']}")
    if isinstance(info.get("suite"), dict) and info["suite"].get("kind") == "monitor":
        monitor_show(rid, store)  # drift statistics, not accuracies
        return
    table = summary_cache.load(url, rid, info["units"])  # kept by `run` or an earlier `show`
    if table is not None:
        _print_table(table)
        return
    _print_summary(st or _open_store(store), rid, info["units"])


@app.command()
@user_errors
def compare(
    run_a: Annotated[str, typer.Argument(help="Baseline run")],
    run_b: Annotated[str, typer.Argument(help="Run to compare against the baseline")],
    store: StoreOpt = None,
    metric: Annotated[list[str] | None, typer.Option(help="Metric(s) to compare")] = None,
) -> None:
    """Differences B - A per probe, level and metric: 95% (paired) bootstrap CIs; "better"/"worse"
    only where significant after Benjamini-Hochberg FDR control (5 %) over all compared rows."""
    from robustlab.metrics import compare as compare_runs

    st = _open_store(store)
    a, b = st.resolve(run_a), st.resolve(run_b)
    df = compare_runs(st.records(a), st.records(b), metric or ["accuracy"])
    tested = int(df["p_value"].notna().sum()) if len(df) else 0
    table = Table(
        title=f"A={a} vs B={b} (B - A)",
        caption="better/worse: permutation test (paired where the runs share examples), "
        f"Benjamini-Hochberg FDR 5 % over {tested} comparisons (q = adjusted p); n.s. = not "
        "significant",
    )
    per_model = "model" in df
    for col in ("model",) * per_model + ("kind", "probe", "level", "metric", "A", "B"):
        table.add_column(col)
    for col in ("B - A", "95% CI", "q", ""):
        table.add_column(col)

    def num(v: float, missing: bool) -> str:
        return "missing" if missing else ("n/a" if v != v else f"{v:.3f}")

    for r in df.itertuples():
        if r.status != "ok":
            mark = f"[yellow]{r.status}[/]"
        elif r.significant:
            mark = "[green]better[/]" if (r.diff > 0) == r.higher_is_better else "[red]worse[/]"
        else:
            mark = "n.s."
        ci = "" if r.ci_lo != r.ci_lo else escape(f"[{r.ci_lo:+.3f}, {r.ci_hi:+.3f}]")
        table.add_row(*((r.model,) if per_model else ()), r.kind, r.probe, f"{r.level:g}",
                      r.metric, num(r.a, r.status == "missing in A"),
                      num(r.b, r.status == "missing in B"),
                      "" if r.diff != r.diff else f"{r.diff:+.3f}", ci,
                      "" if r.q_value != r.q_value else f"{r.q_value:.3g}", mark)  # fmt: skip
    out.print(table)


EXIT_REGRESSION = 1  # `gate`: a significant regression beyond --max-drop


@app.command()
@user_errors
def gate(
    baseline: Annotated[str, typer.Option("--baseline", help="Baseline run (id, prefix, latest)")],
    candidate: Annotated[str, typer.Option("--candidate", help="Candidate run to gate")],
    store: StoreOpt = None,
    max_drop: Annotated[
        str, typer.Option("--max-drop", help="Largest tolerated drop: 2pp or 0.02")
    ] = "0",
    metric: Annotated[list[str] | None, typer.Option(help="Metric(s) to gate on")] = None,
    alpha: Annotated[float, typer.Option(help="False-discovery rate (Benjamini-Hochberg)")] = 0.05,
    junit: Annotated[str | None, typer.Option("--junit", help="Write JUnit XML here")] = None,
    summary: Annotated[
        str | None,
        typer.Option(
            "--summary",
            help="Write the Markdown summary here (default: appended to "
            "$GITHUB_STEP_SUMMARY when set)",
        ),
    ] = None,  # fmt: skip
) -> None:
    """CI gate: exit 1 when a (model, probe, level) row of the candidate is significantly worse
    than the baseline (paired permutation test, Benjamini-Hochberg FDR) by more than --max-drop;
    0 when none is; 2 on bad input. See docs/gate.md."""
    from robustlab.gate import gate_runs, parse_max_drop

    drop = parse_max_drop(max_drop)
    target, mode = summary, "w"
    if target is None and os.environ.get("GITHUB_STEP_SUMMARY"):
        target, mode = os.environ["GITHUB_STEP_SUMMARY"], "a"
    for what, path in (("--summary", target), ("--junit", junit)):  # before any work
        if path and not Path(path).expanduser().absolute().parent.is_dir():
            raise ConfigError(f"{what} {path}: its folder does not exist")
    st = _open_store(store)
    res = gate_runs(st, baseline, candidate, metric or ["accuracy"], drop, alpha=alpha)
    md = res.markdown()
    try:
        if target:
            with open(target, mode, encoding="utf-8") as f:
                f.write(md)
        if junit:
            res.write_junit(junit)
    except OSError as e:
        raise ConfigError(f"cannot write the gate's output: {e.strerror}: {e.filename}") from None
    table = Table(title=md.splitlines()[0].removeprefix("## "), title_justify="left")
    per_model = "model" in res.rows
    for col in ("model",) * per_model + ("probe", "level", "metric", "A", "B", "drop", "q", ""):
        table.add_column(col)
    for r in res.rows.itertuples():
        verdict = res._verdict(r)
        style = "red" if r.regression else ("green" if verdict == "better" else "")
        table.add_row(*((str(r.model),) if per_model else ()), f"{r.kind}/{r.probe}",
                      f"{r.level:g}", r.metric, "" if r.a != r.a else f"{r.a:.3f}",
                      "" if r.b != r.b else f"{r.b:.3f}",
                      "" if r.drop != r.drop else f"{r.drop:+.3f}",
                      "" if r.q_value != r.q_value else f"{r.q_value:.3g}",
                      f"[{style}]{verdict}[/]" if style else verdict)  # fmt: skip
    out.print(table)
    for note in res.notes:
        out.print(f"note: {escape(note)}")
    if not res.passed:
        raise typer.Exit(EXIT_REGRESSION)


@app.command()
@user_errors
def report(
    run_ids: Annotated[
        list[str], typer.Argument(help="Run id, prefix, or 'latest'; several: compared")
    ],
    store: StoreOpt = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Report folder")] = None,
) -> None:
    """Write a run's self-contained HTML report and its JSON. With RUN_A RUN_B ...: the report of
    the last run with a comparison section (each later run vs RUN_A: B - A, paired bootstrap CIs,
    Benjamini-Hochberg flags)."""
    from robustlab.report import write_report

    st = _open_store(store)
    ids = list(dict.fromkeys(st.resolve(r) for r in run_ids))
    if len(run_ids) > 1 and len(ids) < 2:
        raise ConfigError(f"the runs {', '.join(run_ids)} are all run {ids[0]}: nothing to compare")
    monitors = [i for i in ids if st.run_info(i)["suite"].get("kind") == "monitor"]
    if monitors:  # drift statistics, not accuracies: the monitor's own page
        if len(ids) > 1:
            raise ConfigError(f"run {monitors[0]} is a drift monitor: it has no report to compare")
        monitor_show(
            ids[0], store, str(Path(_report_dir(store, out_dir)) / f"{ids[0]}-monitor.html")
        )
        return
    compare_with = ids if len(ids) > 1 else ()
    html, js = write_report(st, ids[-1], _report_dir(store, out_dir), compare_with=compare_with)
    out.print(f"report: {html}\njson:   {js}")


export_app = typer.Typer(help="Export a run to other tools.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("mlflow")
@user_errors
def export_mlflow(
    run_id: Annotated[str, typer.Argument(help="Run id, prefix, or 'latest'")],
    store: StoreOpt = None,
    tracking_uri: Annotated[
        str, typer.Option("--tracking-uri", help="MLflow tracking URI")
    ] = "file:./mlruns",
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment [default: the run's suite name]")
    ] = None,
) -> None:
    """Log a run's summary metrics, parameters and report (HTML + JSON) to MLflow."""
    from robustlab.export.mlflow import export_run

    st = _open_store(store)
    res = export_run(st, st.resolve(run_id), tracking_uri, experiment)
    out.print(f"mlflow run {res['mlflow_run_id']} in experiment {escape(res['experiment'])}: "
              f"{res['n_metrics']} metrics, {res['n_params']} params, report artifacts "
              f"({escape(tracking_uri)})")  # fmt: skip


@app.command()
@user_errors
def serve(
    store: StoreOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind (not loopback: needs --token)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port")] = 8765,
    token: Annotated[
        str | None, typer.Option(help="Require this token on every request (header or ?token=)")
    ] = None,
) -> None:
    """Serve a read-only dashboard of the store: runs, reports, examples, comparisons, suites
    over time (see docs/dashboard.md)."""
    from robustlab.serve import check_bind, open_store

    check_bind(host, token)
    st = open_store(_store_location(store))  # an existing store of this schema, never written
    try:
        import uvicorn

        from robustlab.serve import make_app
    except ImportError as e:
        raise ConfigError(f"robustlab serve needs FastAPI and uvicorn: pip install "
                          f"'robustlab[serve]' ({e})") from None  # fmt: skip
    out.print(f"serving {escape(st.url)} at http://{host}:{port}/ (read-only; Ctrl+C stops)")
    uvicorn.run(make_app(st, token), host=host, port=port, log_level="warning")


@app.command()
@user_errors
def train(
    spec: Annotated[str, typer.Argument(help="Training spec YAML (see docs/training.md)")],
    out_dir: Annotated[
        str, typer.Option("--out", help="Folder for model.pt, model.torchscript.pt, provenance")
    ] = "trained-model",
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    """Train a model from a spec (cached, resumable), write it to files and compare before/after."""
    from robustlab.training.command import run_spec

    res = run_spec(spec, out_dir, progress)
    t = Table(
        title=f"{res['data']} ({res['n']} examples), PGD at eps={res['eps']:g} ({res['norm']})"
    )
    for col in ("model", "clean accuracy", "PGD accuracy"):
        t.add_column(col)
    for name, row in res["rows"].items():
        t.add_row(name, f"{row['clean']:.3f}", f"{row['pgd']:.3f}")
    out.print(t)
    for what, path in res["paths"].items():
        out.print(f"{what}: {path}")


monitor_app = typer.Typer(
    help="Drift monitoring of production batches (S44).", no_args_is_help=True
)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("run")
@user_errors
def monitor_run(
    config: Annotated[str, typer.Argument(help="Monitor YAML (see docs/monitor.md)")],
    store: StoreOpt = None,
) -> None:
    """Score batches against the reference (KS, MMD, PSI, C2ST) and record them in the store."""
    from robustlab.monitor import load_config, run_monitor

    cfg = load_config(config)
    run_id, results = run_monitor(cfg, _open_store(store))
    t = Table(title=f"monitor {escape(cfg['name'])} (run {run_id})")
    dets = [d for d in results[0] if isinstance(results[0][d], dict)]
    for col in ("#", "batch", "n", *dets):
        t.add_column(col)
    for r in results:
        cells = [_drift_cell(r[d]) for d in dets]
        t.add_row(str(r["index"]), escape(r["batch"]), str(r["n"]), *cells)
    out.print(t)


@monitor_app.command("show")
@user_errors
def monitor_show(
    run_id: Annotated[str, typer.Argument(help="Monitor run id, prefix, or 'latest'")] = "latest",
    store: StoreOpt = None,
    html: Annotated[
        str | None, typer.Option("--html", help="Also write an HTML page with the plot here")
    ] = None,
) -> None:
    """A monitor's batches over time: each detector's statistic, p-value and alert."""
    from robustlab.monitor import fmt_num, history, html_report

    info, rows = history(_open_store(store), run_id)
    t = Table(title=f"monitor {escape(info['suite']['name'])} (run {info['id']})")
    for col in ("#", "batch", "n", "detector", "statistic", "p-value", "alert"):
        t.add_column(col)
    for r in rows:
        t.add_row(str(r["index"]), escape(str(r["batch"])), str(r["n"]), r["detector"],
                  fmt_num(r["statistic"]), fmt_num(r["p_value"]), "ALERT" if r["alert"] else "")  # fmt: skip
    out.print(t)
    if html:
        Path(html).parent.mkdir(parents=True, exist_ok=True)
        Path(html).write_text(html_report(info, rows))
        out.print(f"html: {html}")


def _drift_cell(r: dict[str, Any]) -> str:
    p = r["p_value"]
    text = f"{r['statistic']:.3g}" + ("" if p != p else f" (p={p:.3g})")
    return f"[red]{text} ALERT[/]" if r["alert"] else text


def main() -> None:
    """Console-script entry point."""
    app()
