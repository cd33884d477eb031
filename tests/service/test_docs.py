"""/docs and /redoc render their operations in a real browser (Debian's chromium, driven by Playwright) with
every request outside the server refused: clusters are often air-gapped, so no asset may come from a CDN."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import require_module, require_tool
from tests.server import running

OPERATIONS = ("/score", "/rerank", "/get_reward", "/classify", "/v1/rerank", "/v2/rerank", "/healthz")


def test_docs_and_redoc_render_every_operation_offline(bert_onnx_bundle: Path, tmp_path: Path) -> None:
    chromium = require_tool("chromium", "chromium-browser")
    sync_api = require_module("playwright.sync_api", "pip install -e '.[dev]'")
    with running(model=bert_onnx_bundle) as live, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        outside: list[str] = []

        def only_the_server(route: object) -> None:
            url = route.request.url  # type: ignore[attr-defined]
            if url.startswith(live.url) or url.startswith("data:"):
                route.continue_()  # type: ignore[attr-defined]
            else:
                outside.append(url)
                route.abort()  # type: ignore[attr-defined]

        page.route("**/*", only_the_server)
        page.goto(live.url + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        paths = set(page.locator(".opblock-summary-path").all_inner_texts())
        assert set(OPERATIONS) <= {p.strip().replace("\u200b", "") for p in paths}, paths
        page.screenshot(path=str(tmp_path / "docs.png"))

        page.goto(live.url + "/redoc")
        page.wait_for_selector("text=Score (prompt, completion) items", timeout=30_000)
        redoc = page.content()
        assert all(op in redoc for op in OPERATIONS)
        browser.close()
    assert outside == [], f"the pages asked for assets outside the server: {outside}"
