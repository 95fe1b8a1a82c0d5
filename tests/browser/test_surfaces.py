"""What people see, in a real browser (Debian's chromium, headless, driven by Playwright).

The drift report of real replayed questions must draw every chart with data points and log no
error; the alert emails and the weekly summary must say how much, and every link in them must
open (200) on the running local stack. Screenshots for docs/ are written with
``TAGWATCH_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import math
import os
import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests

from tests.processes import NEW_WORDS

from .conftest import Demo
from .stack import REPO_ROOT

pytestmark = pytest.mark.slow

SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"

# every plot gets drawn: show each feature's block, scroll each plot into view (popmon renders
# lazily through an IntersectionObserver), wait until all say rendered
RENDER_ALL = """async () => {
  document.querySelectorAll('.section_feature').forEach(e => { e.style.display = 'block'; });
  for (const key of Object.keys(render_func)) {
    const el = document.getElementById(key);
    if (el) { el.scrollIntoView(); await new Promise(r => setTimeout(r, 30)); }
  }
  for (let i = 0; i < 200 && Object.values(rendered).some(v => !v); i++) {
    await new Promise(r => setTimeout(r, 100));
  }
  return Object.entries(rendered).filter(([k, v]) => !v).map(([k]) => k);
}"""

PLOTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => {
  const data = d._fullData || [];
  // heatmap z: rows of typed arrays (decoded bdata)
  const flat = v => ArrayBuffer.isView(v) || Array.isArray(v) ? Array.from(v) : [v];
  const numbers = t => Array.from((t.type === 'heatmap' ? t.z : t.y) || [])
    .flatMap(flat).filter(v => typeof v === 'number');
  return {
    id: d.id,
    section: d.closest('section').dataset.sectionTitle,
    types: data.map(t => t.type),
    lengths: data.map(t => t.type === 'table' ? (t.cells.values || []).length
                                              : (t.y || t.z || []).length),
    values: data.map(numbers),
    marks: d.querySelectorAll('g.point, path.point, .heatmaplayer image, g.trace.bars').length,
  };
})"""


def _page(browser: Any, errors: list[str]) -> Any:
    page = browser.new_page(viewport={"width": 1200, "height": 820})
    page.on(
        "console",
        lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    return page


def _screenshot(page: Any, name: str, full_page: bool = False) -> None:
    if os.environ.get("TAGWATCH_UPDATE_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), type="jpeg", quality=60, full_page=full_page)
    assert path.stat().st_size < 200_000, f"{path}: {path.stat().st_size} bytes"


def _links(page: Any) -> list[str]:
    return [h for h in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")]


def _check_links(
    demo: Demo, links: list[str], where: str, external: str = r"^https://stackoverflow\.com/q"
) -> dict[str, int]:
    """Every link to the local stack answers 200; others may only match ``external``."""
    statuses: dict[str, int] = {}
    for link in dict.fromkeys(links):
        u = urlparse(link)
        if u.scheme in ("http", "https") and u.hostname == "127.0.0.1":
            assert u.port in demo.stack.ports.values(), f"{where}: {link} is not on the stack"
            statuses[link] = requests.get(link, timeout=10).status_code
        else:
            assert re.match(external, link), f"{where}: {link} is neither local nor expected"
    bad = {k: v for k, v in statuses.items() if v != 200}
    assert not bad, f"{where}: links that do not open: {bad}"
    return statuses


def test_latest_html_exists_from_the_first_start(demo: Demo) -> None:
    # before the replay: the waiting page, or (the demo's drift job runs every 5 s) the page of
    # a run that had nothing to judge yet; both say what is judged (tests/deploy/test_stack.py
    # sees the waiting page of the daily schedule)
    page = demo.waiting_page
    assert "no report yet" in page or "waiting for the first complete bin" in page
    assert "held-out validation questions" in page
    assert "0.07" in page  # the red rule


def test_drift_report_draws_every_chart(demo: Demo, browser: Any) -> None:
    errors: list[str] = []
    page = _page(browser, errors)
    response = page.goto(demo.report_url, wait_until="load")
    assert response.status == 200
    assert page.evaluate(RENDER_ALL) == [], "plots that never rendered"
    plots = page.evaluate(PLOTS)
    by_section: dict[str, list[dict[str, Any]]] = {}
    for p in plots:
        by_section.setdefault(p["section"], []).append(p)
    # three judged 1-minute bins: 2011, 2011, 2019
    (dataset,) = [p for p in by_section["Overview"] if p["id"] == "Dataset"]
    assert dataset["types"] == ["table"]
    histograms = by_section["Histograms"]
    assert len(histograms) >= 9
    for p in histograms:
        assert p["marks"] > 0 and all(n > 0 for n in p["lengths"]), p
        assert any(v > 0 for vs in p["values"] for v in vs), p
    comparisons = by_section["Comparisons"]
    assert {p["id"] for p in comparisons} >= {
        "oov_ratio-ref_max_prob_diff",
        "top_tag-ref_max_prob_diff",
    }
    for p in comparisons:
        (effects,) = p["values"]  # the effect size of each bin, drawn as one bar per bin
        assert len(effects) == 3 and all(math.isfinite(v) for v in effects), p
        assert p["marks"] > 0, p
    oov = next(p for p in comparisons if p["id"] == "oov_ratio-ref_max_prob_diff")
    assert oov["values"][0][-1] >= 0.07, "the 2019 bin's oov_ratio effect size is red"
    for p in by_section["Profiles"]:
        assert p["marks"] > 0 and p["lengths"] == [3], p
    # Alerts: per feature, the number of green/yellow/red lights per bin (HTML tables)
    alert_cells = page.eval_on_selector_all(
        "section[data-section-title=Alerts] table.overview td:not(.metric)",
        "els => els.map(e => e.textContent.trim())",
    )
    numbers = [c for c in alert_cells if c.isdigit()]
    assert len(numbers) >= 3 * 3 * 9, alert_cells[:20]
    assert any(int(n) > 0 for n in numbers)
    # tagwatch's summary: effect size and rule per feature, unknown_feedback_tags_ratio per bin
    summary = page.inner_text("#tagwatch-effects")
    assert re.search(
        r"oov_ratio\s+red\s+max_prob_diff 0\.\d{3}\s+≥ 0\.05 yellow, ≥ 0\.07 red", summary
    )
    assert "unknown_feedback_tags_ratio" in summary
    shares = page.eval_on_selector_all("#tagwatch-feedback td.fb-share", "els => els.length")
    assert shares == 3
    # What changed comes first, and names the words, the questions and the new tags
    titles = page.eval_on_selector_all(
        "section[data-section-title]", "els => els.map(e => e.dataset.sectionTitle)"
    )
    assert titles.index("What changed") < titles.index("Summary") < titles.index("Histograms")
    changed = page.inner_text("#tagwatch-changes")
    words = page.eval_on_selector_all("#current-words code", "els => els.map(e => e.innerText)")
    assert len(NEW_WORDS & set(words)) >= 3, words
    assert "red" in page.inner_text("#text-status") and "ROC AUC" in changed
    assert page.eval_on_selector_all("#typical-questions a", "els => els.length") == 10
    assert page.eval_on_selector_all("#unknown-tags code", "els => els.length") > 0
    page.evaluate(
        "document.getElementById('oov_ratio-ref_max_prob_diff').closest('.card').scrollIntoView();"
        "window.scrollBy(0, -90)"
    )
    _screenshot(page, "drift-report.jpg")
    # popmon's own links (its project page, bootstrap credits) are external: local ones checked
    _check_links(demo, _links(page), "drift report", external=r"^https://")
    assert not errors, errors
    page.close()


# per alert table of an email: (its title, its "How much" cell)
TABLES = """els => els.map(t => [
  (t.querySelector('b') || {innerText: ''}).innerText,
  (t.querySelector('td.how-much') || {innerText: ''}).innerText])"""


def _html(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def test_alert_emails_say_how_much_and_their_links_open(
    demo: Demo, browser: Any, tmp_path: Path
) -> None:
    alerts = [m for m in demo.mails if "Weekly summary" not in str(m["Subject"])]
    assert alerts, "no alert email"
    drift = [m for m in alerts if "DataDriftDetected" in _html(m)]
    assert drift
    for i, msg in enumerate(alerts):
        subject = str(msg["Subject"])
        assert not subject.startswith(" "), subject
        html = _html(msg)
        assert "the training baseline" not in html
        assert "grafana" not in html.lower()  # no Grafana in the local stack
        file = tmp_path / f"alert-{i}.html"
        file.write_text(html)
        errors: list[str] = []
        page = _page(browser, errors)
        page.goto(file.as_uri(), wait_until="load")
        tables = page.eval_on_selector_all("table", TABLES)
        how_much = [text for name, text in tables if text and "DriftExplained" not in name]
        explained = [text for name, text in tables if text and "DriftExplained" in name]
        for text in explained:  # the words behind the drift, with their shares
            assert len(NEW_WORDS & set(re.findall(r"[a-z.#+-]+", text))) >= 3, text
            assert re.search(r"\d+\.\d%", text), text
        # the value, and the threshold (or rule) it is judged against
        assert how_much or explained, html
        for text in how_much:
            assert len(re.findall(r"\d\.\d{3}|\d+(?:\.\d+)?%", text)) >= 2, text
            assert "threshold" in text or "the rule" in text, text
            assert "held-out validation questions" in text or "threshold 0.10" in text, text
        if "DataDriftDetected" in html:
            # each red feature with its measured effect size and the rule
            for text in how_much:
                # max_prob_diff features red from 0.070, the text's ROC AUC from 0.600
                rule = r"effect size of 0\.\d{3}; the rule: red from 0\.(070|600)"
                assert re.search(rule, text), text
            _screenshot(page, "alert-email.jpg")
        links = _links(page)
        assert any("/docs/runbook.md#" in h for h in links)
        assert any(h.endswith("/reports/latest.html") for h in links)
        if explained:  # the report of the run that found it, not only latest
            assert any(re.search(r"/reports/\d{4}-\d{2}-\d{2}T\d{6}Z\.html$", h) for h in links)
        _check_links(demo, links, subject)
        assert not errors, errors
        page.close()


def test_weekly_summary_renders_and_its_links_open(demo: Demo, browser: Any) -> None:
    assert demo.weekly_html is not None
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(demo.weekly_html.as_uri(), wait_until="load")
    images = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
    assert len(images) == 3 and all(w > 0 for w in images)
    text = page.inner_text("body")
    # counts from the store: every replayed question of today
    today = [line for line in text.splitlines() if line.strip().startswith(time_label())]
    assert today and str(500) in today[0].split(), today
    assert "What to do" in text and "DataDriftDetected" in text
    # What changed this week: the 2019 questions' words and tags, named
    changed = page.inner_text("#new-words")
    assert len(NEW_WORDS & set(re.findall(r"[a-z.#+-]+", changed))) >= 3, changed
    assert page.eval_on_selector_all("#new-tags code", "els => els.length") > 0
    links = _links(page)
    assert any("/docs/runbook.md#datadriftdetected" in h for h in links)
    _check_links(demo, links, "weekly summary")
    (weekly_mail,) = [m for m in demo.mails if "Weekly summary" in str(m["Subject"])]
    assert not str(weekly_mail["Subject"]).startswith(" ")
    assert not errors, errors
    page.close()


def time_label() -> str:
    import time

    return time.strftime("%a %d %b", time.gmtime())
