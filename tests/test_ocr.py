"""OCR: the real rapidocr engine reads rendered text; filtering, reading order and caching around it."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
from PIL import Image, ImageDraw, ImageFont

from ingest import ocr
from ingest.caption_cache import CaptionCache
from ingest.captions import CaptionBuilder
from ingest.ocr import TextBox, reading_order
from rag.config import Settings

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def poster(lines: list[str]) -> Image.Image:
    font = ImageFont.truetype(str(FONT), 64)
    image = Image.new("RGB", (520, 110 * len(lines) + 20), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((30, 20 + 110 * i), line, fill="black", font=font)
    return image


class CountingEngine:
    """Wraps the real engine (or a canned result) and counts calls."""

    def __init__(self, inner=None, result=None) -> None:
        self.inner, self.result, self.calls = inner, result, 0

    def __call__(self, image):
        self.calls += 1
        return self.inner(image) if self.inner is not None else (self.result, [0.0])


def test_engine_reads_rendered_text_in_reading_order() -> None:
    text = ocr.read_text(poster(["SALE 50%", "OPEN DAILY"]))
    assert text.replace(" ", "") == "SALE50%OPENDAILY"
    assert ocr.ocr_caption(poster(["SALE 50%"])).replace(" ", "") == "textinimage:SALE50%"
    assert ocr.get_engine() is ocr.get_engine()  # loaded once per process


def test_blank_image_has_no_text() -> None:
    assert ocr.ocr_caption(Image.new("RGB", (300, 200), "white")) == ""


def test_low_confidence_boxes_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    box = [[0, 0], [50, 0], [50, 20], [0, 20]]
    low = [[0, 40], [50, 40], [50, 60], [0, 60]]
    monkeypatch.setattr(ocr, "_engine", CountingEngine(result=[[box, "KEEP", 0.93], [low, "DROP", 0.41]]))
    assert ocr.read_text(Image.new("RGB", (60, 60))) == "KEEP"
    assert ocr.read_text(Image.new("RGB", (60, 60)), min_score=0.3) == "KEEP DROP"


def test_reading_order_lines_then_left_to_right() -> None:
    boxes = [
        TextBox("world", 0.9, 200, 12, 300, 48),
        TextBox("second", 0.9, 10, 80, 120, 110),
        TextBox("hello", 0.9, 10, 10, 150, 50),
        TextBox("line", 0.9, 140, 78, 220, 112),
    ]
    assert [b.text for b in reading_order(boxes)] == ["hello", "world", "second", "line"]


def test_ocr_result_cached_by_content_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingEngine(inner=ocr.get_engine())
    monkeypatch.setattr(ocr, "_engine", counting)
    settings = Settings(data_dir=tmp_path)
    image = poster(["SALE 50%"])

    with CaptionCache(tmp_path / "c.sqlite") as cache:
        first = CaptionBuilder(settings, ocr=True, cache=cache).build("h1", tmp_path / "poster_01.png", image)
        blank = CaptionBuilder(settings, ocr=True, cache=cache).build("h2", tmp_path / "empty_7.png", Image.new("RGB", (200, 100), "white"))
    assert counting.calls == 2
    assert first.sources["ocr"].replace(" ", "") == "textinimage:SALE50%"
    assert first.text.replace(" ", "") == "textinimage:SALE50%."
    assert blank.sources == {"filename": "empty"} and blank.text == "empty"

    with CaptionCache(tmp_path / "c.sqlite") as cache:  # a later run: fresh cache object, same file
        builder = CaptionBuilder(settings, ocr=True, cache=cache)
        again = builder.build("h1", tmp_path / "renamed.png", Image.new("RGB", (10, 10)))
        builder.build("h2", tmp_path / "empty_7.png", Image.new("RGB", (10, 10)))
        assert cache.get("h2", "ocr", ocr.ENGINE) == ""
    assert counting.calls == 2  # neither image was read again
    assert again.sources == first.sources and builder.stats["ocr_cached"] == 2
    assert ocr.ENGINE.startswith("rapidocr-onnxruntime-")
