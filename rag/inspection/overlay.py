"""Draw gold boxes (green) against predicted boxes (red; grid-cell answers dashed orange) on an image."""

from __future__ import annotations

from typing import Iterable, Sequence

from PIL import Image, ImageDraw

from rag.inspection.boxes import Box, GoldBox

GOLD = (0, 200, 0)
PRED = (230, 30, 30)
CELL = (255, 150, 0)


def _xyxy(b: "Box | GoldBox | Sequence[float]") -> tuple[float, float, float, float]:
    if isinstance(b, (Box, GoldBox)):
        return tuple(float(v) for v in b.xyxy)  # type: ignore[return-value]
    return tuple(float(v) for v in b)  # type: ignore[return-value]


def _dashed_rect(draw: ImageDraw.ImageDraw, xyxy: tuple[float, float, float, float], fill: tuple, width: int, dash: int = 6) -> None:
    x0, y0, x1, y1 = xyxy
    for a, b, horizontal, fixed in ((x0, x1, True, y0), (x0, x1, True, y1), (y0, y1, False, x0), (y0, y1, False, x1)):
        t = a
        while t < b:
            e = min(b, t + dash)
            seg = [(t, fixed), (e, fixed)] if horizontal else [(fixed, t), (fixed, e)]
            draw.line(seg, fill=fill, width=width)
            t += 2 * dash


def draw_boxes(
    image: Image.Image,
    gold: Iterable["GoldBox | Box | Sequence[float]"] = (),
    predicted: Iterable["Box | Sequence[float]"] = (),
    max_side: int | None = None,
    caption: str | None = None,
) -> Image.Image:
    """A new RGB image: gold in green, predictions in red (cells dashed orange), optionally downscaled."""
    img = image.convert("RGB")
    scale = 1.0
    if max_side and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 200))
    for b in gold:
        x0, y0, x1, y1 = (v * scale for v in _xyxy(b))
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=GOLD, width=width)
    for b in predicted:
        x0, y0, x1, y1 = (v * scale for v in _xyxy(b))
        rect = (x0 + width, y0 + width, max(x0 + width, x1 - 1 - width), max(y0 + width, y1 - 1 - width))
        if isinstance(b, Box) and b.from_cell:
            _dashed_rect(draw, rect, CELL, width)
        else:
            draw.rectangle(rect, outline=PRED, width=width)
    if caption:
        band = Image.new("RGB", (img.width, 14), (255, 255, 255))
        ImageDraw.Draw(band).text((2, 1), caption[: max(8, img.width // 6)], fill=(0, 0, 0))
        out = Image.new("RGB", (img.width, img.height + band.height), (255, 255, 255))
        out.paste(img, (0, 0))
        out.paste(band, (0, img.height))
        img = out
    return img
