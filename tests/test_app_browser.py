"""The app served on 127.0.0.1 (`mmrag app`'s command line) and driven in headless Chromium by Playwright.

The store is served by `milvus-lite server`, so the test process can index more images into it while the
app is running (the way `mmrag index` and `mmrag app` share one store), then reload the app and see them.
The screenshot lands in the test's tmp dir, and in docs/app_screenshot.png when that file is missing or
MMRAG_UPDATE_SCREENSHOT=1 (it is committed; refreshing it on every run would only churn git).
The full 567-image catalog, query chips, "no good match" and Ask answers: test_app_browser_catalog.py.
"""

from __future__ import annotations

import pytest

from browser_support import (
    CHAT, DOCS, browser_page, keep_screenshot, open_app, rendered_thumbnails, require_browser, serve_app,
    submit_query, switch_on,
)  # fmt: skip
from conftest import copy_sample, pick_sample
from rag.ask import NO_ENDPOINT
from rag.config import Settings

pytestmark = pytest.mark.browser

SCREENSHOT = DOCS / "app_screenshot.png"
N_FIRST, N_LATER = 20, 4
QUERY = "a living room with a couch"


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, retrieval_data, retrieval_rows, text_model):
    """A caption-side index (real MiniLM + BM25, no CLIP) behind milvus-lite server, and the app on it."""
    require_browser()
    from ingest.pipeline import index_folder
    from rag.dev.milvus_server import MilvusLiteServer

    root = tmp_path_factory.mktemp("browser_app")
    rows = pick_sample(retrieval_rows, N_FIRST + N_LATER, step=7)
    first = copy_sample(rows, retrieval_data, root / "first", N_FIRST)
    later = copy_sample(rows[N_FIRST:], retrieval_data, root / "later", N_LATER)
    with MilvusLiteServer(root / "data" / "milvus.db") as server:
        settings = Settings(data_dir=root / "data", uri=server.uri, clip_model=None)
        report = index_folder(first, settings, metadata=root / "first" / "metadata.jsonl", show_progress=False,
                              text_embedder=text_model)  # fmt: skip
        assert report.total_in_store == N_FIRST
        with serve_app(settings, root / "streamlit.log") as url:
            yield {"url": url, "settings": settings, "later": later, "root": root, "text_model": text_model}


@pytest.fixture(scope="module")
def page(served_app):
    with browser_page() as tab:
        yield tab


def test_query_renders_thumbnails_and_screenshot(served_app, page) -> None:
    open_app(page, served_app["url"])
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert "Images in catalog" in sidebar.inner_text()
    assert served_app["settings"].uri in sidebar.inner_text() and "server" in sidebar.inner_text()

    submit_query(page, QUERY, 10)
    widths = rendered_thumbnails(page)
    assert len(widths) == 10 and all(w == 256 for w in widths)  # 10 square thumbnails, all decoded
    cards = page.locator(CHAT).nth(1).inner_text()
    assert "#1 · score" in cards and "#10 · score" in cards and "caption 1" in cards  # caption/BM25 ranks shown
    assert "CLIP" not in cards  # no image vectors in this index: no CLIP rank column
    assert QUERY in page.locator(CHAT).nth(0).inner_text()

    page.wait_for_timeout(500)  # let the last layout pass settle before the picture
    keep_screenshot(page.screenshot(full_page=False), served_app["root"], SCREENSHOT)


def test_ask_without_an_endpoint_says_so_and_shows_the_results(served_app, page) -> None:
    """The Ask toggle on an app with no VLM endpoint configured: one line saying so, and the search results."""
    open_app(page, served_app["url"])
    switch_on(page, "Ask")
    submit_query(page, "a dog on a sofa", 10)
    assert len(rendered_thumbnails(page)) == 10
    notes = page.locator(f'{CHAT} [data-testid="stAlert"]').all_inner_texts()
    assert [n.strip() for n in notes].count(NO_ENDPOINT) == 1  # (a "no good match" notice may join it)
    assert "#1 · score" in page.locator(CHAT).nth(1).inner_text()


def test_index_while_app_runs_then_reload(served_app, page) -> None:
    """`mmrag index` into the served store while the app holds it open; Reload shows the new images."""
    from ingest.pipeline import index_folder

    open_app(page, served_app["url"])
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
    submit_query(page, "a photo", 10)
    assert len(rendered_thumbnails(page)) == 10
