"""`robustlab serve`: real runs in a tmp store, the dashboard served by uvicorn in a thread (once per
module), pages checked over HTTP and in headless Chromium; numbers checked against the records
(accuracies recomputed directly, the flagged regression against an exact McNemar test)."""

from __future__ import annotations

import re
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from robustlab.cli import app as cli
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
CHROMIUM = Path("/usr/bin/chromium")

VERSIONS = """
name: versions
models:
  - {{name: digits-mlp, label: mlp, params: {params}}}
data: {{name: digits, params: {{split: test}}}}
probes:
  - {{kind: perturbation, name: gaussian_noise, levels: [3]}}
metrics: [accuracy]
"""
OTHER = """
name: other
models:
  - {name: digits-mlp, label: small}
data: {name: digits, params: {split: test}}
probes: []
"""


TEXT = """
name: text
models: [{name: tfidf-logreg}]
data: {name: bbc-news, params: {split: test, limit: 12, max_words: 30}}
probes:
  - {kind: perturbation, name: typo, levels: [0.3]}
"""
DRILL = """
name: drill
models:
  - {name: digits-mlp, label: mlp}
  - {name: digits-mlp, label: weak, params: {hidden: 4, epochs: 2}}
data: {name: digits, params: {split: test, test_fraction: 0.1}}
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [1, 3]}
  - {kind: attack, name: autoattack, params: {attacks: [fgsm, {name: pgd, steps: 5}]}, levels: [0.1]}
  - {kind: attack, name: fgsm, levels: [0.05, 0.1]}
slices:
  - {by: label}
  - {name: heavy-0-1, where: {ink: [heavy], label: [0, 1]}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(app: Any) -> tuple[Any, threading.Thread, str]:
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from robustlab.serve import make_app, open_store

    root = tmp_path_factory.mktemp("serve")
    path = root / "runs.db"
    with Store(path) as st:
        good = run_suite(Suite.from_yaml(VERSIONS.format(params="{}")), st, progress=False)
        weak = "{hidden: 4, epochs: 2}"  # version 2: a much smaller model, trained briefly
        bad = run_suite(Suite.from_yaml(VERSIONS.format(params=weak)), st, progress=False)
        other = run_suite(Suite.from_yaml(OTHER), st, progress=False)
        text = run_suite(Suite.from_yaml(TEXT), st, progress=False)
        drill = run_suite(Suite.from_yaml(DRILL), st, progress=False)
    mtime = path.stat().st_mtime_ns
    store = open_store(str(path))
    server, thread, base = _start(make_app(store))
    yield {"base": base, "store": store, "path": path, "good": good, "bad": bad, "other": other,
           "text": text, "drill": drill, "mtime": mtime}  # fmt: skip
    server.should_exit = True
    thread.join(10)
    store.close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_pages_and_numbers(served: dict[str, Any]) -> None:
    base, st = served["base"], served["store"]
    code, html = _get(base + "/")
    assert code == 200 and served["good"] in html and served["other"] in html
    code, html = _get(base + "/?suite=other")
    assert code == 200 and served["other"] in html and served["good"] not in html
    code, html = _get(base + "/?model=mlp&status=complete")
    assert served["good"] in html and served["bad"] in html and served["other"] not in html

    # the run page: the report, and one drill-down link per group
    code, html = _get(f"{base}/run/{served['bad']}")
    assert code == 200 and "Summary" in html and "<svg" in html
    links = re.findall(r'class="drill" href="([^"]+)"', html)
    assert len(links) == 2  # clean, gaussian_noise at severity 3
    df = st.records(served["bad"])
    for link in links:
        q = urllib.parse.parse_qs(urllib.parse.urlparse(link.replace("&amp;", "&")).query)
        g = df[(df["probe"] == q["probe"][0]) & (df["level"] == float(q["level"][0]))]
        code, page = _get(base + link.replace("&amp;", "&"))
        assert code == 200
        assert f"{len(g)} records" in page
        assert f"accuracy {g['correct'].fillna(0).mean():.3f}" in page  # recomputed directly
        assert page.count("<tr>") - 1 == len(g)
        ids = re.findall(r"<tr><td class=num>0</td><td class=num>(\d+)</td>", page)
        assert sorted(map(int, ids)) == sorted(g["example_id"].tolist())
    # the dashboard never writes the store
    assert served["path"].stat().st_mtime_ns == served["mtime"]


def _cell_value(text: str) -> float:
    """The number a linked report cell shows: ``90.8% [..]`` or ``0.908 [..]``."""
    m = re.match(r"\s*([\d.]+)(%?)", text)
    assert m, text
    return float(m.group(1)) / (100 if m.group(2) else 1)


def test_report_cells_drill_down(served: dict[str, Any]) -> None:
    """Every linked cell of the embedded report shows the accuracy of the group it links to
    (recomputed from the records; the summary's worst-drop cell the drop from clean, its "at"
    cell the condition); the summary, transformation and metrics tables are linked."""
    base, st = served["base"], served["store"]
    code, html = _get(f"{base}/run/{served['bad']}")
    report = html[html.index("id=report") :]
    cells = re.findall(r'class="drill-cell" href="([^"]+)">(.*?)</a>', report, re.S)
    df = st.records(served["bad"])
    linked = set()
    for href, text in cells:
        q = urllib.parse.parse_qs(urllib.parse.urlparse(href.replace("&amp;", "&")).query)
        g = df[(df["probe"] == q["probe"][0]) & (df["level"] == float(q["level"][0]))]
        acc = g["correct"].mean()
        linked.add(q["probe"][0])
        if " pp" in text:  # the summary's "OOD worst drop": clean minus this group's accuracy
            drop = df[df["probe"] == "clean"]["correct"].mean() - acc
            assert float(text.split(" pp")[0]) / 100 == pytest.approx(drop, abs=5e-4 + 1e-9)
        elif "@" in text and "%" not in text:  # the OOD table's "at": the condition itself
            assert text == f"{q['probe'][0]}@{q['level'][0].removesuffix('.0')}"
        else:
            assert _cell_value(text) == pytest.approx(acc, abs=0.0005 + 1e-9)  # shown rounded
    assert linked == {"clean", "gaussian_noise"}
    sections = re.findall(r'<section id="([^"]+)">(.*?)</section>', report, re.S)
    with_links = {k for k, body in sections if "drill-cell" in body}
    assert {"summary", "transformations", "metrics"} <= with_links


def _query(href: str) -> dict[str, str]:
    q = urllib.parse.parse_qs(urllib.parse.urlparse(href.replace("&amp;", "&")).query)
    return {k: v[0] for k, v in q.items()}


def _in_slice(df: Any, q: dict[str, str]) -> Any:
    """The records of slice ``q`` recomputed directly: ``by: label`` is ``m.label == value``,
    ``heavy-0-1`` is ink heavy and label 0 or 1 (the DRILL suite's slices)."""
    if q["slice"] == "label":
        return df[df["m.label"].astype(str) == q["value"]]
    assert q["slice"] == "heavy-0-1" and "value" not in q
    return df[(df["m.ink"].astype(str) == "heavy") & df["m.label"].astype(str).isin(["0", "1"])]


def _page_numbers(page: str) -> tuple[int, float]:
    n = int(re.search(r"· (\d+) records", page).group(1))
    return n, float(re.search(r"· accuracy ([\d.]+)", page).group(1))


def test_slice_member_and_section_cells_drill_down(served: dict[str, Any]) -> None:
    """Slice cells (clean and per probe at its worst level), ensemble member counts, per-corruption
    CE cells and the summary's worst conditions link to pages whose record count and accuracy equal
    those recomputed from the store's records, filtered here with pandas (not the app's code)."""
    base, st = served["base"], served["store"]  # pages without regenerated inputs (&show=0)
    df = st.records(served["drill"])
    code, html = _get(f"{base}/run/{served['drill']}")
    assert code == 200
    sections = dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', html, re.S))
    cell = re.compile(r'class="drill-cell" href="([^"]+)">(.*?)</a>', re.S)

    # slices: every linked cell; its page's count and accuracy against the records, and the
    # cell's own accuracy (percent, rounded) against the same records
    slice_cells = cell.findall(sections["slices"])
    assert {_query(h)["slice"] for h, _ in slice_cells} == {"label", "heavy-0-1"}
    assert {_query(h)["probe"] for h, _ in slice_cells} == {"clean", "gaussian_noise", "autoattack",
                                                             "fgsm"}  # fmt: skip
    for href, text in slice_cells:
        q = _query(href)
        g = df[(df["model"] == q["model"]) & (df["probe"] == q["probe"])]
        g = _in_slice(g[g["level"] == float(q["level"])], q)
        if q.get("value", "3") == "3":  # the pages of two slices (time): label=3, heavy-0-1
            n, acc = _page_numbers(_get(base + href.replace("&amp;", "&") + "&show=0")[1])
            assert n == len(g) > 0 and acc == pytest.approx(g["correct"].mean(), abs=5e-4)
        if "%" in text:
            assert _cell_value(text) == pytest.approx(g["correct"].mean(), abs=5e-4 + 1e-9)
        else:  # the n (clean) cell
            assert int(text) == len(g)

    # ensemble breakdown: each non-zero count -> its records (member k broke them, wrong before
    # the attack: clean_correct 0, robust to all: still correct); the counts add up to examples
    outcome = {"clean_wrong": lambda g: g["x.clean_correct"] == 0,
               "robust": lambda g: (g["x.clean_correct"] == 1) & (g["correct"] == 1),
               "failed": lambda g: g["correct"].isna()}  # fmt: skip
    linked: dict[str, int] = {}
    for href, text in cell.findall(sections["ensemble-breakdown"]):
        q = _query(href)
        g = df[(df["model"] == q["model"]) & (df["probe"] == "autoattack")]
        n, acc = _page_numbers(_get(base + href.replace("&amp;", "&") + "&show=0")[1])
        if "member" not in q:  # the "examples" cell: the whole group
            assert n == len(g) == int(text)
            continue
        m = q["member"]
        g = g[outcome[m](g)] if m in outcome else g[pd.to_numeric(g["x.member"]) == int(m)]
        assert n == len(g) == int(text.split()[0]) > 0
        assert acc == pytest.approx(g["correct"].mean(), abs=5e-4)
        assert acc == (1.0 if m == "robust" else 0.0)
        linked[q["model"]] = linked.get(q["model"], 0) + n
    assert {"0", "robust"} <= {_query(h).get("member") for h, _ in cell.findall(sections[
        "ensemble-breakdown"])}  # fmt: skip
    for model, n in linked.items():
        assert n == ((df["model"] == model) & (df["probe"] == "autoattack")).sum()

    # mCE: a corruption's CE cell -> that corruption's examples at every level
    ce = [h for h, _ in cell.findall(sections["mce"]) if "gaussian_noise" in h]
    assert len(ce) == 2 and all("level=" not in h for h in ce)
    for href in ce:
        q = _query(href)
        g = df[(df["model"] == q["model"]) & (df["probe"] == "gaussian_noise")]
        code, page = _get(base + href.replace("&amp;", "&") + "&show=0")
        assert _page_numbers(page) == (len(g), pytest.approx(g["correct"].mean(), abs=5e-4))
        assert "every level" in page and set(g["level"]) == {1.0, 3.0}

    # the summary's "OOD worst drop", "at" and worst robust accuracy cells -> that condition
    worst = [(_query(h), t) for h, t in cell.findall(sections["summary"]) if "@" in t]
    assert len(worst) >= 2 * 3  # per model: OOD worst drop, worst robust accuracy; the OOD "at"
    for q, text in worst:
        assert f"{q['probe']}@{q['level'].removesuffix('.0')}" in text

    # logit margins: a row's mean margin -> the records it is computed over (its n)
    for row in re.findall(r"<tr>(.*?)</tr>", sections["logit-margins"], re.S)[1:]:
        tds = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        href = cell.search(tds[3]).group(1)
        q = _query(href)
        n, _ = _page_numbers(_get(base + href.replace("&amp;", "&") + "&show=0")[1])
        assert n == int(tds[-1]) and q["probe"] == ("clean" if "clean" in tds[2] else tds[1])

    # power law: a row's errors at every level -> that attack's records at every level
    for href, text in cell.findall(sections["power-law"]):
        q = _query(href)
        g = df[(df["model"] == q["model"]) & (df["probe"] == q["probe"])]
        assert "level" not in q and q["probe"] == "fgsm" and text.count(":") == 2
        assert _page_numbers(_get(base + href.replace("&amp;", "&") + "&show=0")[1])[0] == len(g)


def test_unknown_slice_or_member_is_an_error_page(served: dict[str, Any]) -> None:
    url = f"{served['base']}/run/{served['drill']}/examples?model=mlp&probe=clean&level=0"
    code, html = _get(url + "&slice=label&value=99")
    assert code == 404 and "no slice &#x27;label=99&#x27;" in html and "label=3" in html
    code, html = _get(url + "&slice=nope")
    assert code == 404 and "no slice &#x27;nope&#x27;" in html
    code, html = _get(url + "&value=3")
    assert code == 404 and "value= needs slice=" in html
    code, html = _get(url + "&member=0")
    assert code == 404 and "no ensemble member" in html
    aa = f"{served['base']}/run/{served['drill']}/examples?model=mlp&probe=autoattack&level=0.1"
    code, html = _get(aa + "&member=7")
    assert code == 404 and "member 7" in html
    code, html = _get(aa + "&member=first")
    assert code == 404 and "a member index" in html and "clean_wrong" in html
    code, html = _get(aa.replace("level=0.1", "level=high"))
    assert code == 400 and "level" in html and "<!DOCTYPE html>" in html


def _png(uri: str) -> Any:
    import base64
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_examples_show_regenerated_inputs(served: dict[str, Any]) -> None:
    base, st = served["base"], served["store"]
    q = urllib.parse.urlencode({"model": "mlp", "probe": "gaussian_noise", "level": 3})
    code, page = _get(f"{base}/run/{served['bad']}/examples?{q}")
    assert code == 200
    gallery = page[page.index("id=gallery") : page.index("<h2>Records")]
    assert gallery.count('class="ex perturbed"') == 6 and gallery.count("reproduced") == 6
    clean = re.findall(r'alt="clean" src="([^"]+)"', gallery)
    noisy = re.findall(r'alt="perturbed" src="([^"]+)"', gallery)
    assert all((_png(a) != _png(b)).any() for a, b in zip(clean, noisy, strict=True))
    # the gallery shows the first records of the table, wrong first
    shown = [int(i) for i in re.findall(r"<figcaption>#(\d+)", gallery)]
    ids = re.findall(r"<tr><td class=num>0</td><td class=num>(\d+)</td>", page)
    assert shown == [int(i) for i in ids[:6]]
    df = st.records(served["bad"]).set_index(["probe", "example_id"])
    assert all(df.loc[("gaussian_noise", i), "correct"] == 0 for i in shown)
    code, more = _get(f"{base}/run/{served['bad']}/examples?{q}&show=12")
    assert more.count('class="ex perturbed"') == 12
    # text: the typo'd words are highlighted
    q = urllib.parse.urlencode({"model": "tfidf-logreg", "probe": "typo", "level": 0.3})
    code, page = _get(f"{base}/run/{served['text']}/examples?{q}")
    assert code == 200 and page.count("<del>") >= 6 and page.count("<ins>") >= 6


def test_regression_over_time_matches_mcnemar(served: dict[str, Any]) -> None:
    """The S32 view flags the drop of version 2 at severity 3; an exact McNemar test (scipy's
    binomial test on the discordant pairs) on the records agrees that it is significant."""
    from scipy.stats import binomtest

    st = served["store"]
    code, html = _get(f"{served['base']}/suite/versions")
    assert code == 200 and "<svg" in html
    n_reg = int(re.search(r"id=regressions>(\d+) regression", html).group(1))
    assert n_reg >= 1
    a, b = st.records(served["good"]), st.records(served["bad"])
    rows = re.findall(r"<tr>(.*?)</tr>", html)
    flagged = [r for r in rows if 'class="regression"' in r]
    assert len(flagged) == n_reg
    for row in flagged:
        kind, probe, level = re.findall(r"<td>([^<]*)</td>", row)[:3]
        ga = a[(a["probe"] == probe) & (a["level"] == float(level))].set_index("example_id")
        gb = b[(b["probe"] == probe) & (b["level"] == float(level))].set_index("example_id")
        ca, cb = ga["correct"].align(gb["correct"])
        drop = cb.mean() - ca.mean()
        assert drop < 0 and f"{drop:+.3f}" in row
        lost, won = int(((ca == 1) & (cb == 0)).sum()), int(((ca == 0) & (cb == 1)).sum())
        assert binomtest(lost, lost + won, 0.5).pvalue < 0.01
    # every cell shows the run's accuracy (the mean of correct) with its CI
    for rid, df in ((served["good"], a), (served["bad"], b)):
        acc = df[df["probe"] == "clean"]["correct"].mean()
        assert f"{acc:.3f} <span class=ci>" in html, rid
    code, cmp = _get(f"{served['base']}/compare?a={served['good']}&b={served['bad']}")
    assert code == 200 and cmp.count('class="regression"') == n_reg and "worse" in cmp


def test_errors_are_pages(served: dict[str, Any]) -> None:
    code, html = _get(f"{served['base']}/run/nope")
    assert code == 404 and "no run" in html
    code, html = _get(f"{served['base']}/suite/missing")
    assert code == 404 and "no runs of suite" in html
    code, html = _get(f"{served['base']}/run/{served['good']}/examples?model=x&probe=clean&level=0")
    assert code == 404 and "no records for model" in html


def test_token(served: dict[str, Any]) -> None:
    from robustlab.serve import make_app

    server, thread, base = _start(make_app(served["store"], token="s3cret"))
    try:
        assert _get(base + "/")[0] == 401
        assert _get(base + "/?token=wrong")[0] == 401
        assert _get(base + "/?token=s3cret")[0] == 200
        assert _get(base + "/", {"X-Robustlab-Token": "s3cret"})[0] == 200
        assert _get(base + "/", {"Authorization": "Bearer s3cret"})[0] == 200
        assert _get(base + "/", {"Cookie": "robustlab_token=s3cret"})[0] == 200
    finally:
        server.should_exit = True
        thread.join(10)


def test_bad_input_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = tmp_path / "nowhere" / "runs.db"
    r = runner.invoke(cli, ["serve", "--store", str(missing)])
    assert r.exit_code == 2 and "no store at" in r.output
    assert not missing.parent.exists()  # nothing created
    newer = tmp_path / "newer.db"
    Store(newer).close()
    with sqlite3.connect(newer) as con:
        con.execute("UPDATE robustlab_meta SET value='99' WHERE key='schema_version'")
    con.close()
    before = newer.read_bytes()
    r = runner.invoke(cli, ["serve", "--store", str(newer)])
    assert r.exit_code == 2 and "newer than this robustlab" in r.output
    assert newer.read_bytes() == before
    with sqlite3.connect(newer) as con:  # an older schema: serving would have to migrate it
        con.execute("UPDATE robustlab_meta SET value='2' WHERE key='schema_version'")
    con.close()
    before = newer.read_bytes()
    r = runner.invoke(cli, ["serve", "--store", str(newer)])
    assert r.exit_code == 2 and "older schema version 2" in r.output
    assert newer.read_bytes() == before
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE t (x)")
    con.close()
    r = runner.invoke(cli, ["serve", "--store", str(foreign)])
    assert r.exit_code == 2 and "not a robustlab store" in r.output
    r = runner.invoke(cli, ["serve", "--store", str(newer), "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "without --token" in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.browser
def test_dashboard_in_chromium(served: dict[str, Any], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    base = served["base"]
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(base + "/")
            page.select_option("select[name=suite]", "other")
            page.click("button[type=submit]")
            page.wait_for_load_state("load")
            assert page.locator("#runs tbody tr").count() == 1
            page.goto(base + "/")
            page.click(f"text={served['bad']}")
            page.wait_for_load_state("load")
            assert "Summary" in page.locator("#report h2").all_inner_texts()
            drill = page.locator("a.drill").nth(1)  # gaussian_noise at severity 3
            drill.click()
            page.wait_for_load_state("load")
            assert "Examples: mlp" in page.locator("h1").inner_text()
            n = int(re.search(r"(\d+) records", page.locator("body").inner_text()).group(1))
            assert page.locator("#examples tbody tr").count() == n > 0
            # drill-down from a report cell: the perturbed image, and a text diff
            page.goto(f"{base}/run/{served['bad']}")
            page.locator("#transformations a.drill-cell").first.click()
            page.wait_for_load_state("load")
            img = page.locator("#gallery img.perturbed").first
            assert img.is_visible() and img.evaluate("i => i.naturalWidth") >= 8
            assert page.locator("#gallery img.diff").count() == 6
            page.goto(f"{base}/run/{served['text']}")
            page.locator("#transformations a.drill-cell").first.click()
            page.wait_for_load_state("load")
            assert page.locator("#gallery del").first.is_visible()
            assert page.locator("#gallery ins").first.is_visible()
            page.goto(f"{base}/suite/versions")
            reg = page.locator("td.regression")
            assert reg.count() >= 1 and reg.first.is_visible()
            assert "regression" in reg.first.inner_text()
            assert page.locator("figure > svg").first.bounding_box()["width"] > 200
            page.click("text=→")
            page.wait_for_load_state("load")
            assert page.locator("td.regression").first.inner_text() == "worse"
        finally:
            browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(base)] == []
