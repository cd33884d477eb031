"""The docs site: ``mkdocs build --strict`` passes (a broken link, a missing anchor or a page left out of the nav
fails it), and the built pages render in a real browser (Debian's chromium, driven by Playwright) with every
request that leaves the site refused: the site must read offline, as clusters and laptops on a plane do."""

from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.docs.blocks import ROOT
from tests.helpers import require_module, require_tool


def _nav_pages() -> list[str]:
    """Every page the nav lists, in order."""
    pages: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            pages.append(node)
        elif isinstance(node, list):
            for n in node:
                walk(n)
        elif isinstance(node, dict):
            for n in node.values():
                walk(n)

    walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    return pages


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built strictly (the same command CI and docs/development.md use)."""
    require_module("material", "pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The built site on a local HTTP server (its search index is fetched, which file:// pages may not do)."""
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_every_page_is_in_the_nav_and_built(site: Path) -> None:
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert set(_nav_pages()) == pages
    for page in pages:
        built = site / ("index.html" if page == "index.md" else f"{page.removesuffix('.md')}/index.html")
        assert built.is_file(), page


def test_strict_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    """The gate itself: a copy of the docs with one broken link does not build."""
    require_module("material", "pip install -e '.[dev]'")
    copy = tmp_path / "docs"
    subprocess.run(["cp", "-r", str(ROOT / "docs"), str(copy)], check=True)
    (copy / "index.md").write_text((copy / "index.md").read_text(encoding="utf-8")
                                   + "\n[gone](no-such-page.md)\n", encoding="utf-8")
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").replace("docs_dir: docs", f"docs_dir: {copy}")
    (tmp_path / "mkdocs.yml").write_text(config, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "no-such-page.md" in done.stderr


def test_the_site_renders_offline(served: str, tmp_path: Path) -> None:
    chromium = require_tool("chromium", "chromium-browser")
    sync_api = require_module("playwright.sync_api", "pip install -e '.[dev]'")
    outside: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()

        def only_the_site(route: object) -> None:
            url = route.request.url  # type: ignore[attr-defined]
            if url.startswith(served) or url.startswith("data:"):
                route.continue_()  # type: ignore[attr-defined]
            else:
                outside.append(url)
                route.abort()  # type: ignore[attr-defined]

        page.route("**/*", only_the_site)
        for name in _nav_pages():
            path = "" if name == "index.md" else name.removesuffix(".md") + "/"
            page.goto(f"{served}/{path}")
            title = page.locator("article h1").first.inner_text(timeout=15_000)
            assert title.strip(), name
            # Material's own stylesheet applied (its header is a fixed bar), not the browser's defaults
            position = page.evaluate("getComputedStyle(document.querySelector('.md-header')).position")
            assert position in ("sticky", "fixed"), (name, position)
            assert page.locator("nav.md-nav--primary").count() > 0, name
        # the search runs in the page, on the index the build wrote
        page.goto(f"{served}/")
        page.locator("label.md-search__icon, .md-search__input").first.click()
        page.locator(".md-search__input").fill("drain")
        page.wait_for_selector(".md-search-result__item", timeout=15_000)
        results = page.locator(".md-search-result__item").count()
        page.screenshot(path=str(tmp_path / "site.png"))
        browser.close()
    assert results > 0
    assert outside == [], f"the site asked for assets outside itself: {sorted(set(outside))}"


def test_the_built_html_loads_nothing_from_elsewhere(site: Path) -> None:
    """No stylesheet, script, font or image tag points off the site (links in the text may)."""
    pattern = re.compile(r"<(?:link|script|img)\b[^>]*(?:href|src)=\"(?:https?:)?//", re.I)
    offenders = [str(p.relative_to(site)) for p in site.rglob("*.html") if pattern.search(p.read_text("utf-8"))]
    assert offenders == []


def test_the_code_cites_sections_the_design_has() -> None:
    """"docs/design.md §N" in the code, the manifests and the tests names a section that exists (§4–6: each)."""
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", (ROOT / "docs" / "design.md").read_text("utf-8"), re.M)}
    cited: set[int] = set()
    for path in [*ROOT.glob("*/**/*.py"), *ROOT.glob("k8s/**/*.yaml")]:
        for first, last in re.findall(r"docs/design\.md §(\d+)(?:–(\d+))?", path.read_text("utf-8")):
            cited |= set(range(int(first), int(last or first) + 1))
    assert cited and cited <= sections, cited - sections
