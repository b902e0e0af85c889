"""The app served on 127.0.0.1 (`mmrag app`'s command line) and driven in headless Chromium by Playwright.

The store is served by `milvus-lite server`, so the test process can index more images into it while the
app is running (the way `mmrag index` and `mmrag app` share one store), then reload the app and see them.
The screenshot lands in the test's tmp dir, and in docs/app_screenshot.png when that file is missing or
MMRAG_UPDATE_SCREENSHOT=1 (it is committed; refreshing it on every run would only churn git).
"""

from __future__ import annotations

import io
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import copy_sample, pick_sample
from mmrag.app_launcher import settings_env, streamlit_command
from rag.config import Settings

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "docs" / "app_screenshot.png"
MAX_SCREENSHOT_BYTES = 500 * 1024
N_FIRST, N_LATER = 20, 4
QUERY = "a living room with a couch"
THUMBS = '[data-testid="stChatMessage"] [data-testid="stImage"] img'


def _require_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (Debian package 'chromium'; .ci/run installs it)")
    pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, retrieval_data, retrieval_rows, text_model):
    """A caption-side index (real MiniLM + BM25, no CLIP) behind milvus-lite server, and the app on it."""
    _require_browser()
    from ingest.pipeline import index_folder
    from rag.dev.milvus_server import MilvusLiteServer, free_port

    root = tmp_path_factory.mktemp("browser_app")
    rows = pick_sample(retrieval_rows, N_FIRST + N_LATER, step=7)
    first = copy_sample(rows, retrieval_data, root / "first", N_FIRST)
    later = copy_sample(rows[N_FIRST:], retrieval_data, root / "later", N_LATER)
    with MilvusLiteServer(root / "data" / "milvus.db") as server:
        settings = Settings(data_dir=root / "data", uri=server.uri, clip_model=None)
        report = index_folder(first, settings, metadata=root / "first" / "metadata.jsonl", show_progress=False,
                              text_embedder=text_model)  # fmt: skip
        assert report.total_in_store == N_FIRST
        port = free_port()
        env = {**os.environ, **settings_env(settings), "MMRAG_MODELS_FROM_INDEX": "1"}
        log = (root / "streamlit.log").open("wb")
        app = subprocess.Popen(streamlit_command(port), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 90, app)
            yield {"url": f"http://127.0.0.1:{port}", "settings": settings, "later": later, "root": root,
                   "text_model": text_model}  # fmt: skip
        finally:
            app.terminate()
            try:
                app.wait(15)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
            log.close()


@pytest.fixture(scope="module")
def page(served_app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 960})
            tab.set_default_timeout(120_000)
            yield tab
        finally:
            browser.close()


def _rendered_thumbnails(page) -> list[int]:
    """naturalWidth of every result thumbnail that finished loading (0 = broken image)."""
    return page.eval_on_selector_all(THUMBS, "els => els.map(e => e.complete ? e.naturalWidth : -1)")


def _ask(page, text: str, expected_total: int) -> None:
    box = page.locator('[data-testid="stChatInputTextArea"]')
    box.fill(text)
    box.press("Enter")
    page.wait_for_function(
        f"""() => {{ const imgs = [...document.querySelectorAll('{THUMBS}')];
                    return imgs.length >= {expected_total} && imgs.every(i => i.complete && i.naturalWidth > 0); }}"""
    )


def _small_png(raw: bytes) -> bytes:
    """The screenshot as an adaptive-palette PNG (photos make a full-colour one several MB)."""
    from PIL import Image

    image = Image.open(io.BytesIO(raw)).convert("RGB").quantize(colors=192, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def test_query_renders_thumbnails_and_screenshot(served_app, page) -> None:
    page.goto(served_app["url"])
    page.locator('[data-testid="stChatInputTextArea"]').wait_for()
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert "Images in catalog" in sidebar.inner_text()
    assert served_app["settings"].uri in sidebar.inner_text() and "server" in sidebar.inner_text()

    _ask(page, QUERY, 10)
    widths = _rendered_thumbnails(page)
    assert len(widths) == 10 and all(w == 256 for w in widths)  # 10 square thumbnails, all decoded
    cards = page.locator('[data-testid="stChatMessage"]').nth(1).inner_text()
    assert "#1 · score" in cards and "#10 · score" in cards and "caption 1" in cards  # caption/BM25 ranks shown
    assert "CLIP" not in cards  # no image vectors in this index: no CLIP rank column
    assert QUERY in page.locator('[data-testid="stChatMessage"]').nth(0).inner_text()

    page.wait_for_timeout(500)  # let the last layout pass settle before the picture
    png = _small_png(page.screenshot(full_page=False))
    assert len(png) < MAX_SCREENSHOT_BYTES
    (served_app["root"] / "app_screenshot.png").write_bytes(png)
    if not SCREENSHOT.exists() or os.environ.get("MMRAG_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(png)


def test_index_while_app_runs_then_reload(served_app, page) -> None:
    """`mmrag index` into the served store while the app holds it open; Reload shows the new images."""
    from ingest.pipeline import index_folder

    page.goto(served_app["url"])
    page.locator('[data-testid="stChatInputTextArea"]').wait_for()
    metric = page.locator('[data-testid="stSidebar"] [data-testid="stMetricValue"]')
    assert metric.inner_text().strip() == str(N_FIRST)

    later = served_app["later"]
    report = index_folder(later, served_app["settings"], metadata=later.parent / "metadata.jsonl", show_progress=False,
                          text_embedder=served_app["text_model"])  # fmt: skip
    assert (report.indexed, report.total_in_store) == (N_LATER, N_FIRST + N_LATER)

    page.get_by_role("button", name="Reload index").click()
    page.wait_for_function(
        """n => { const m = document.querySelector('[data-testid="stSidebar"] [data-testid="stMetricValue"]');
                  return m && m.innerText.trim() === String(n); }""",
        arg=N_FIRST + N_LATER,
    )
    _ask(page, "a photo", 10)
    assert len(_rendered_thumbnails(page)) == 10
