"""The report's HTML in a real browser: Debian's headless Chromium through Playwright
(pytest-playwright's ``browser`` fixture, launched with conftest's settings: nothing is
downloaded, no DNS lookups). The real report is opened from a file:// URL and must: log no
console error, request nothing but itself and data: URLs, show every chart, and read on a
phone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@dataclass
class Opened:
    page: Page
    url: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def report_file(report_html: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(report_html, encoding="utf-8")
    return path


def _open(browser: Browser, report_file: Path, viewport: dict[str, int]) -> Iterator[Opened]:
    context = browser.new_context(viewport=viewport, locale="zh-CN")  # type: ignore[arg-type]
    page = context.new_page()
    opened = Opened(page, report_file.as_uri())

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            opened.errors.append(f"console: {message.text} at {message.location}")

    def on_request(request: Request) -> None:
        opened.requests.append(request.url)

    page.on("console", on_console)
    page.on("pageerror", lambda error: opened.errors.append(f"page error: {error}"))
    page.on("request", on_request)
    page.goto(opened.url, wait_until="load")
    page.wait_for_load_state("networkidle")
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture(scope="module")
def desktop(browser: Browser, report_file: Path) -> Iterator[Opened]:
    yield from _open(browser, report_file, DESKTOP)


@pytest.fixture(scope="module")
def phone(browser: Browser, report_file: Path) -> Iterator[Opened]:
    yield from _open(browser, report_file, PHONE)


@pytest.mark.parametrize("name", ["desktop", "phone"])
def test_no_console_errors(name: str, request: pytest.FixtureRequest) -> None:
    opened: Opened = request.getfixturevalue(name)
    assert opened.errors == []


@pytest.mark.parametrize("name", ["desktop", "phone"])
def test_nothing_requested_but_the_file_itself(name: str, request: pytest.FixtureRequest) -> None:
    opened: Opened = request.getfixturevalue(name)
    assert opened.requests, "no request recorded at all"
    assert opened.requests[0] == opened.url
    outside = [u for u in opened.requests if u != opened.url and not u.startswith("data:")]
    assert outside == []


def test_title_and_headings(desktop: Opened) -> None:
    text = desktop.page.inner_text("body")
    for heading in ["前言", "就业篇", "经济与社会篇", "产业篇", "附录"]:
        assert heading in text, heading
    assert desktop.page.title()


@pytest.mark.parametrize("name", ["desktop", "phone"])
def test_every_chart_is_visible(name: str, request: pytest.FixtureRequest) -> None:
    opened: Opened = request.getfixturevalue(name)
    figures = opened.page.locator("figure:has(svg), figure:has(img)")
    count = figures.count()
    assert count >= 1, "the report has no chart"
    for i in range(count):
        figure = figures.nth(i)
        figure.scroll_into_view_if_needed()
        chart = figure.locator("svg, img").first
        box = chart.bounding_box()
        assert box is not None and box["width"] > 20 and box["height"] > 20, (i, box)
        if chart.evaluate("e => e.tagName.toLowerCase()") == "img":
            assert chart.evaluate("e => e.complete && e.naturalWidth > 0"), f"image {i} broken"


def test_readable_on_a_phone(phone: Opened) -> None:
    widths = phone.page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    assert widths[2] == PHONE["width"]
    assert max(widths[:2]) <= PHONE["width"] + 2, widths
    # body text is not shrunk below a readable size
    size = phone.page.evaluate(
        "() => parseFloat(getComputedStyle(document.querySelector('p') || document.body).fontSize)"
    )
    assert size >= 12, size
