"""What the Playwright browser tests share: serve the app (`mmrag app`'s command line) on 127.0.0.1, open headless
Chromium on it, type a query, wait for its thumbnails, and keep a screenshot (small PNG) in docs/ when asked to."""

from __future__ import annotations

import io
import os
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from mmrag.app_launcher import settings_env, streamlit_command
from rag.config import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MAX_SCREENSHOT_BYTES = 500 * 1024
CHAT = '[data-testid="stChatMessage"]'
IMAGES = '[data-testid="stImage"] img'
THUMBS = f"{CHAT} {IMAGES}"
CHAT_INPUT = '[data-testid="stChatInputTextArea"]'


def require_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (Debian package 'chromium'; .ci/run installs it)")
    pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
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


@contextmanager
def serve_app(settings: Settings, log_path: Path) -> Iterator[str]:
    """The app on these settings, as `mmrag app` starts it (models from the index); yields its URL."""
    from rag.dev.milvus_server import free_port

    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MMRAG_", "OPENAI_"))}  # only `settings`
    env = {**inherited, **settings_env(settings), "MMRAG_MODELS_FROM_INDEX": "1"}
    with log_path.open("wb") as log:
        app = subprocess.Popen(streamlit_command(port), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{port}/_stcore/health", 90, app)
            yield f"http://127.0.0.1:{port}"
        finally:
            app.terminate()
            try:
                app.wait(15)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()


@contextmanager
def browser_page(width: int = 1280, height: int = 960) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": width, "height": height})
            tab.set_default_timeout(120_000)
            yield tab
        finally:
            browser.close()


def open_app(page: Any, url: str) -> None:
    """A fresh session (empty chat) of the app."""
    page.goto(url)
    page.locator(CHAT_INPUT).wait_for()


def switch_on(page: Any, label: str) -> None:
    """Turn on the st.toggle labelled `label` (the Search tab's "Ask")."""
    toggle = page.locator('[data-testid="stCheckbox"]').filter(has_text=label)
    toggle.locator("label").click()
    toggle.locator("input:checked").wait_for(state="attached")


def rendered_thumbnails(page: Any, scope: str = "") -> list[int]:
    """naturalWidth of every result thumbnail (in the chat, or under `scope`, a CSS selector) that finished loading
    (0 = broken)."""
    selector = f"{scope} {IMAGES}" if scope else THUMBS
    return page.eval_on_selector_all(selector, "els => els.map(e => e.complete ? e.naturalWidth : -1)")


def wait_thumbnails(page: Any, expected_total: int) -> None:
    """Until the chat shows at least expected_total result thumbnails, all decoded."""
    page.wait_for_function(
        f"""() => {{ const imgs = [...document.querySelectorAll('{THUMBS}')];
                    return imgs.length >= {expected_total} && imgs.every(i => i.complete && i.naturalWidth > 0); }}"""
    )


def submit_query(page: Any, text: str, expected_total: int) -> None:
    """Type a query in the chat box, press Enter, wait for its thumbnails (expected_total in the whole chat)."""
    box = page.locator(CHAT_INPUT)
    box.fill(text)
    box.press("Enter")
    wait_thumbnails(page, expected_total)


def small_png(raw: bytes) -> bytes:
    """The screenshot as an adaptive-palette PNG (photos make a full-colour one several MB)."""
    from PIL import Image

    image = Image.open(io.BytesIO(raw)).convert("RGB").quantize(colors=192, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def keep_screenshot(raw: bytes, tmp_dir: Path, committed: Path, max_bytes: int = MAX_SCREENSHOT_BYTES) -> bytes:
    """Save the screenshot in tmp_dir always, and at `committed` (docs/) when that file is missing or
    MMRAG_UPDATE_SCREENSHOT=1 (it is committed; refreshing it on every run would only churn git)."""
    png = small_png(raw)
    assert len(png) < max_bytes, f"{committed.name}: {len(png)} bytes"
    (tmp_dir / committed.name).write_bytes(png)
    if not committed.exists() or os.environ.get("MMRAG_UPDATE_SCREENSHOT") == "1":
        committed.parent.mkdir(parents=True, exist_ok=True)
        committed.write_bytes(png)
    return png
