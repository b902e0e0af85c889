"""The app on the full 567-image sample catalog, driven in headless Chromium: matched terms highlighted, composite
query chips edited, "no good match" greyed, and an Ask answer with citations linked to the result cards.

The catalog is indexed with `mmrag index --clip-model none` (caption vectors from the real MiniLM, BM25, OCR text;
no CLIP weights exist here) and served the way `mmrag app` serves it. The VLM behind Ask is the scripted local server
(tests/fake_vlm_server.py): plumbing only, its text is no answer quality. Screenshots of the text, composite and
no-match queries land in the test's tmp dir, and in docs/screenshots/ when missing or MMRAG_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from browser_support import (
    CHAT, DOCS, THUMBS, browser_page, keep_screenshot, open_app, rendered_thumbnails, require_browser, serve_app,
    submit_query, switch_on, wait_thumbnails,
)  # fmt: skip
from conftest import read_rows, require_retrieval_data, run_mmrag
from fake_vlm_server import FakeVLMServer
from rag.config import Settings

pytestmark = pytest.mark.browser

SHOTS = DOCS / "screenshots"
WIDTH, HEIGHT = 1280, 1250
ASK_IMAGES = 3
TEXT_QUERY = "a giraffe eating leaves"
COMPOSITE_QUERY = "2:kitchen + oven - person"
ABSENT_QUERY = "a kangaroo hopping through the outback"  # eval/absent_queries.json: no caption or label holds it
QUESTION = "which photos show a dog on a beach, and what are the dogs doing?"
FOLLOW_UP = "only the ones with two dogs"
SCRIPTED_ANSWER = "Scripted test reply, not a model: [1] and [2] were sent; [5] was not."


@pytest.fixture(scope="module")
def catalog_app(tmp_path_factory):
    """The whole sample catalog indexed caption-side through the CLI, and the app on it with Ask wired to the
    scripted VLM server."""
    require_browser()
    catalog = require_retrieval_data()
    rows = read_rows(catalog)
    root = tmp_path_factory.mktemp("browser_catalog")
    out = run_mmrag("index", str(catalog / "images"), "--metadata", str(catalog / "metadata.jsonl"), "--clip-model",
                    "none", "--data-dir", str(root / "data"), "--quiet", "--json", timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["total_in_store"] == len(rows) == 567 and report["channels"] == ["caption", "bm25", "ocr"]
    with FakeVLMServer(default=SCRIPTED_ANSWER, models=("scripted-vlm",)) as vlm:
        settings = Settings(data_dir=root / "data", clip_model=None, vlm_base_url=vlm.base_url,
                            vlm_model="scripted-vlm", ask_images=ASK_IMAGES)  # fmt: skip
        with serve_app(settings, root / "streamlit.log") as url:
            yield {"url": url, "root": root, "vlm": vlm,
                   "categories": {Path(r["file"]).name: set(r.get("categories", [])) for r in rows},
                   "captions": {Path(r["file"]).name: " ".join(r.get("captions", [])).lower() for r in rows},
                   }  # fmt: skip


@pytest.fixture(scope="module")
def page(catalog_app):
    with browser_page(WIDTH, HEIGHT) as tab:
        yield tab


def _turn(page: Any, n: int) -> Any:
    """The assistant message of the n-th turn (0-based)."""
    return page.locator(CHAT).nth(2 * n + 1)


def _file_names(page: Any, n: int) -> list[str]:
    """The image file names of the n-th turn's result cards, in rank order (each card's Caption expander names it)."""
    names = _turn(page, n).locator('[data-testid="stExpanderDetails"] [data-testid="stCaptionContainer"]')
    return [text.strip() for text in names.all_text_contents()]


def _open_captions(page: Any, n: int, count: int) -> None:
    """Expand the Caption of the first `count` cards of the n-th turn (where the matched terms are in bold)."""
    summaries = _turn(page, n).locator('[data-testid="stExpander"] summary')
    for i in range(count):
        summaries.nth(i).click()
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('{CHAT}')][{2 * n + 1}]
                     .querySelectorAll('[data-testid="stExpander"] details[open]').length >= {count}"""
    )


def _screenshot(page: Any, name: str, root: Path, bottom_of: Any) -> bytes:
    """The chat column from the first message to the bottom of `bottom_of` (a locator), as docs/screenshots/NAME."""
    page.wait_for_timeout(500)  # let the last layout pass settle before the picture
    main = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()
    top = page.locator(CHAT).first.bounding_box()["y"] - 12
    bottom = bottom_of.bounding_box()
    height = min(bottom["y"] + bottom["height"] + 12, HEIGHT) - top
    clip = {"x": main["x"] + 2, "y": top, "width": main["width"] - 2, "height": height}  # +2: not the sidebar's edge
    return keep_screenshot(page.screenshot(clip=clip), root, SHOTS / name, max_bytes=400 * 1024)


def test_text_query_highlights_matched_terms(catalog_app, page) -> None:
    open_app(page, catalog_app["url"])
    assert page.locator('[data-testid="stSidebar"] [data-testid="stMetricValue"]').inner_text().strip() == "567"
    submit_query(page, TEXT_QUERY, 10)
    assert sorted(set(rendered_thumbnails(page))) == [256]  # 10 thumbnails, all decoded
    answer = _turn(page, 0)
    assert "10 results · hybrid" in answer.inner_text()
    assert not answer.locator('[class*="st-key-nomatch_"]').count()  # giraffes exist: nothing greyed
    # a good turn never tells the user "no good match" on a card: its weakest results say "weakest match"
    assert not answer.locator('[data-testid="stCaptionContainer"]').filter(has_text="no good match").count()
    names = _file_names(page, 0)
    assert len(names) == 10 and all("giraffe" in catalog_app["captions"][name] for name in names[:5])

    matched = answer.locator('[data-testid="stCaptionContainer"]').filter(has_text="matched: ").all_inner_texts()
    terms = [set(m.removeprefix("matched: ").split(", ")) for m in matched]
    assert len(terms) >= 5 and all(t <= {"giraffe", "eating", "leave"} for t in terms)  # BM25 tokens of the query
    assert "matched: giraffe, eating, leave" in matched  # the top result holds every query term
    _open_captions(page, 0, 5)
    bold = answer.locator('details[open] [data-testid="stExpanderDetails"] strong').all_inner_texts()
    bold = [b.lower() for b in bold]
    assert {"giraffe", "eating", "leaves"} <= set(bold)  # the caption's matched words, highlighted
    assert set(bold) <= {"giraffe", "giraffes", "eating", "leave", "leaves"}, bold  # and nothing else
    first_row = answer.locator('[data-testid="stHorizontalBlock"]').first
    _screenshot(page, "text.png", catalog_app["root"], first_row)


def test_composite_query_chips_edit_the_search(catalog_app, page) -> None:
    open_app(page, catalog_app["url"])
    submit_query(page, COMPOSITE_QUERY, 10)
    chips = _turn(page, 0).locator('[class*="st-key-chips_"] [data-tag]')
    assert [c.strip() for c in chips.all_inner_texts()] == ["+ 2:kitchen", "+ oven", "- person"]
    with_minus = _file_names(page, 0)
    categories = catalog_app["categories"]
    assert len(with_minus) == 10 and all("kitchen" in catalog_app["captions"][n] for n in with_minus[:5])
    first_row = _turn(page, 0).locator('[data-testid="stHorizontalBlock"]').first
    _screenshot(page, "composite.png", catalog_app["root"], first_row)

    # remove the "- person" chip, search again: a new turn, and people come back into the kitchens
    page.get_by_role("button", name="Remove - person").click()
    page.wait_for_function(f"""() => document.querySelectorAll('{CHAT} [class*="st-key-chips_"] [data-tag]')
                                              .length === 2""")
    page.get_by_role("button", name="Search with these parts").click()
    wait_thumbnails(page, 20)
    assert "2:kitchen + oven" in page.locator(CHAT).nth(2).inner_text()
    without = _file_names(page, 1)
    assert len(without) == 10 and without != with_minus
    people = [sum("person" in categories[n] for n in names) for names in (with_minus, without)]
    assert people[0] < people[1], people  # the negative part had kept out photos with people (COCO labels)
    latest = _turn(page, 1).locator('[class*="st-key-chips_"] [data-tag]')
    assert [c.strip() for c in latest.all_inner_texts()] == ["+ 2:kitchen", "+ oven"]
    assert not _turn(page, 0).locator('[class*="st-key-chips_"]').count()  # only the latest turn is editable

    # type the chip back in: the same parts as the first turn find the same photos, in the same order
    box = _turn(page, 1).locator('[class*="st-key-chips_"] input').first
    box.click()
    box.fill("- person")
    page.get_by_role("option").filter(has_text="- person").wait_for()  # the drop-down offers the new chip
    box.press("Enter")
    latest.filter(has_text="- person").wait_for()
    page.keyboard.press("Escape")  # close the chip drop-down
    page.get_by_role("button", name="Search with these parts").click()
    wait_thumbnails(page, 30)
    assert "2:kitchen + oven - person" in page.locator(CHAT).nth(4).inner_text()
    assert _file_names(page, 2) == with_minus


def test_no_good_match_greys_the_nearest_results(catalog_app, page) -> None:
    open_app(page, catalog_app["url"])
    submit_query(page, ABSENT_QUERY, 10)
    answer = _turn(page, 0)
    notice = answer.locator('[data-testid="stAlert"]').all_inner_texts()
    assert [n.strip() for n in notice] == [f"No good match for “{ABSENT_QUERY}”: nothing in the catalog scores "
                                           "above the no-match threshold. The nearest results are shown greyed below."]
    grid = answer.locator('[class*="st-key-nomatch_"]')
    assert grid.count() == 1 and len(rendered_thumbnails(page, '[class*="st-key-nomatch_"]')) == 10
    filters = page.eval_on_selector_all(THUMBS, "els => els.map(e => getComputedStyle(e).filter)")
    opacity = page.eval_on_selector_all(THUMBS, "els => els.map(e => getComputedStyle(e).opacity)")
    assert filters == ["grayscale(1)"] * 10 and opacity == ["0.45"] * 10  # the nearest results, greyed
    labels = answer.locator('[data-testid="stCaptionContainer"]').filter(has_text="no good match").count()
    assert labels == 10
    assert not any("kangaroo" in catalog_app["captions"][n] for n in _file_names(page, 0))
    _screenshot(page, "no_match.png", catalog_app["root"], grid.locator('[data-testid="stHorizontalBlock"]').first)


def test_ask_streams_an_answer_with_citations_linked_to_the_cards(catalog_app, page) -> None:
    """Plumbing only: the answer is the scripted server's text."""
    vlm = catalog_app["vlm"]
    before = len(vlm.chat_requests)
    open_app(page, catalog_app["url"])
    switch_on(page, "Ask")
    submit_query(page, QUESTION, 10)
    answer = _turn(page, 0)
    page.wait_for_function(f"""() => [...document.querySelectorAll('{CHAT}')][1]
                                     .querySelectorAll('a[href*="#card-"]').length >= 2""")
    links = answer.locator('a[href*="#card-"]')
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert [h.rsplit("-", 1)[-1] for h in hrefs] == ["1", "2"]  # [5] was not sent: no link
    for href in hrefs:  # each citation points at its card in the same turn
        assert answer.locator(f'[id="{href.split("#", 1)[1]}"]').count() == 1
    card_top = """id => document.getElementById(id).getBoundingClientRect().top"""
    assert page.evaluate(card_top, hrefs[1].split("#")[1]) > 100
    links.nth(1).click()  # [2] scrolls the chat to card #2's anchor
    page.wait_for_function(f"id => Math.abs(({card_top})(id)) < 4", arg=hrefs[1].split("#")[1])
    assert page.url.endswith(hrefs[1]) and len(page.context.pages) == 1  # same tab
    text = answer.inner_text()
    assert "Scripted test reply" in text and "[5]⚠" in text
    assert "the answer cites [5], a result that was not sent to the model" in text
    unsent = answer.locator('[data-testid="stCaptionContainer"]').filter(has_text="not sent to the model")
    assert unsent.count() == 10 - ASK_IMAGES
    assert len(rendered_thumbnails(page)) == 10
    sent = vlm.chat_requests[before:]
    assert len(sent) == 1 and len(sent[0].images) == ASK_IMAGES and sent[0].body.get("stream") is True

    # right after an answer, a question refines it: searched together, sent with the previous exchange
    submit_query(page, FOLLOW_UP, 20)
    assert f"Follow-up: searched for “{QUESTION} {FOLLOW_UP}”" in _turn(page, 1).inner_text()
    _turn(page, 1).locator('a[href*="#card-"]').first.wait_for()
    sent = vlm.chat_requests[before:]
    assert [m["role"] for m in sent[-1].body["messages"]] == ["system", "user", "assistant", "user"]
    assert len(sent) == 2 and sent[-1].body["messages"][2]["content"] == SCRIPTED_ANSWER
