"""OCR of text inside an image with rapidocr-onnxruntime; the engine loads once per process, on first use."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from rag.errors import MmragError, ModelUnavailableError

if TYPE_CHECKING:
    from PIL import Image

MIN_SCORE = 0.6
PREFIX = "text in image: "


def _engine_name() -> str:
    try:
        return f"rapidocr-onnxruntime-{metadata.version('rapidocr-onnxruntime')}"
    except metadata.PackageNotFoundError:
        return "rapidocr-onnxruntime"


# Cache key of OCR text: a new rapidocr release re-reads images instead of trusting old text.
ENGINE = _engine_name()

_engine: Any = None
_engine_lock = threading.Lock()


@dataclass(frozen=True)
class TextBox:
    text: str
    score: float
    x0: float
    y0: float
    x1: float
    y1: float


def get_engine() -> Any:
    """The process-wide RapidOCR instance (its ONNX sessions take ~1 s to build)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR

                _engine = RapidOCR()
            except Exception as exc:  # import errors, missing/corrupt bundled ONNX files
                raise ModelUnavailableError(f"OCR engine rapidocr-onnxruntime is unavailable: {exc}") from exc
        return _engine


def read_boxes(image: "Image.Image") -> list[TextBox]:
    """Every text box rapidocr finds, unfiltered."""
    engine = get_engine()
    try:
        result, _ = engine(image.convert("RGB"))
    except Exception as exc:
        raise MmragError(f"OCR failed: {exc}") from exc
    boxes = []
    for points, text, score in result or []:
        xs = [float(p[0]) for p in points]
        ys = [float(p[1]) for p in points]
        boxes.append(TextBox(" ".join(str(text).split()), float(score), min(xs), min(ys), max(xs), max(ys)))
    return boxes


def reading_order(boxes: list[TextBox]) -> list[TextBox]:
    """Top-to-bottom lines (boxes whose vertical centre falls inside a line's band), left-to-right in each."""
    lines: list[list[TextBox]] = []
    for box in sorted(boxes, key=lambda b: (b.y0 + b.y1) / 2):
        centre = (box.y0 + box.y1) / 2
        line = lines[-1] if lines else None
        if line is not None and min(b.y0 for b in line) <= centre <= max(b.y1 for b in line):
            line.append(box)
        else:
            lines.append([box])
    return [box for line in lines for box in sorted(line, key=lambda b: b.x0)]


def read_text(image: "Image.Image", min_score: float = MIN_SCORE) -> str:
    """The image's text in reading order, from boxes at or above min_score ('' when none)."""
    kept = [b for b in read_boxes(image) if b.score >= min_score and b.text]
    return " ".join(b.text for b in reading_order(kept))


def ocr_caption(image: "Image.Image", min_score: float = MIN_SCORE) -> str:
    """'text in image: ...' or '' when the image holds no confident text."""
    text = read_text(image, min_score)
    return PREFIX + text if text else ""
