"""Crop/zoom: tile an image (2x2 or 3x3, overlapping), ask about each tile, map answers back, aggregate."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from rag.inspection.answer_parser import Answer
from rag.inspection.boxes import Box, merge_overlapping

CROP_SPECS = ("none", "2x2", "3x3")
OVERLAP = 0.2  # fraction of a tile shared with its neighbour, so a defect on a seam is whole in some tile
MIN_SIDE = 448  # tiles are enlarged (never shrunk) so their long side reaches this: the "zoom"


@dataclass(frozen=True)
class Tile:
    index: int  # 0-based, row-major
    xyxy: tuple[int, int, int, int]  # in image pixels, x1/y1 exclusive

    @property
    def width(self) -> int:
        return self.xyxy[2] - self.xyxy[0]

    @property
    def height(self) -> int:
        return self.xyxy[3] - self.xyxy[1]


def grid_size(spec: str) -> int:
    if spec == "none":
        return 1
    if spec in CROP_SPECS:
        return int(spec.split("x")[0])
    raise ValueError(f"unknown crop spec {spec!r}: choose one of {', '.join(CROP_SPECS)}")


def _spans(length: int, n: int, overlap: float) -> list[tuple[int, int]]:
    if n == 1:
        return [(0, length)]
    size = length / (n - (n - 1) * overlap)
    step = size * (1 - overlap)
    spans = []
    for i in range(n):
        a = int(round(i * step))
        b = length if i == n - 1 else min(length, int(math.ceil(a + size)))
        spans.append((a, b))
    return spans


def make_tiles(width: int, height: int, spec: str, overlap: float = OVERLAP) -> list[Tile]:
    """Row-major tiles covering the whole image; neighbours overlap by `overlap` of a tile."""
    n = grid_size(spec)
    xs, ys = _spans(width, n, overlap), _spans(height, n, overlap)
    return [Tile(r * n + c, (xs[c][0], ys[r][0], xs[c][1], ys[r][1])) for r in range(n) for c in range(n)]


def crop_tile(image: Image.Image, tile: Tile, min_side: int = MIN_SIDE) -> tuple[Image.Image, float]:
    """The tile at full resolution, enlarged so its long side is >= min_side; returns (crop, scale)."""
    crop = image.crop(tile.xyxy)
    scale = max(1.0, min_side / max(crop.size))
    if scale > 1.0:
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.Resampling.LANCZOS)
    return crop, scale


def map_to_image(answer: Answer, tile: Tile, scale: float) -> Answer:
    """Boxes parsed in the sent (scaled) tile's pixels -> original image pixels."""
    if answer.error is not None or not answer.boxes:
        return answer
    x0, y0 = tile.xyxy[0], tile.xyxy[1]
    boxes = tuple(
        Box(
            (b.xyxy[0] / scale + x0, b.xyxy[1] / scale + y0, b.xyxy[2] / scale + x0, b.xyxy[3] / scale + y0),
            b.label,
            b.score,
            b.from_cell,
        )
        for b in answer.boxes
    )
    return answer.with_(boxes=boxes)


def aggregate(tile_answers: list[Answer]) -> Answer:
    """Whole-image verdict from tile verdicts.

    Any tile defective -> defective (confidence = the most confident positive tile). Otherwise a failed tile
    means we cannot claim "no defect" -> error; an uncertain tile -> uncertain; all clean -> ok
    (confidence = the least confident clean tile).
    """
    if len(tile_answers) == 1:
        return tile_answers[0]
    per_tile = [a.to_dict() for a in tile_answers]
    positives = [a for a in tile_answers if a.error is None and a.defective is True]
    extra = {"tiles": per_tile}
    if positives:
        types = tuple(dict.fromkeys(t for a in positives for t in a.types))
        boxes = tuple(merge_overlapping(b for a in positives for b in a.boxes))
        confs = [a.confidence for a in positives if a.confidence is not None]
        return Answer(True, types, boxes, max(confs) if confs else None, None, None, extra)
    errors = [a for a in tile_answers if a.error is not None]
    if errors:
        return Answer(None, error=f"{len(errors)}/{len(tile_answers)} tiles failed: {errors[0].error}", extra=extra)
    if any(a.defective is None for a in tile_answers):
        confs = [a.confidence for a in tile_answers if a.defective is None and a.confidence is not None]
        return Answer(None, confidence=min(confs) if confs else None, extra=extra)
    confs = [a.confidence for a in tile_answers if a.confidence is not None]
    return Answer(False, confidence=min(confs) if confs else None, extra=extra)
