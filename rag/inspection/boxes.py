"""Boxes, 3x3 grid cells and the matching rules used everywhere in inspection (pixels, xyxy, x1/y1 exclusive)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

GRID = 3  # "grid cell" answers always refer to a 3x3 grid over the (tile) image, cells 1..9 row-major
CELL_NAMES = {
    1: "upper-left", 2: "top", 3: "upper-right",
    4: "left", 5: "centre", 6: "right",
    7: "lower-left", 8: "bottom", 9: "lower-right",
}  # fmt: skip
IOU_HIT = 0.1
TINY_AREA_FRAC = 0.01  # a defect is "tiny" when its box covers < 1% of the image


@dataclass(frozen=True)
class Box:
    """A rectangle in image pixels plus what it is and how sure the detector was."""

    xyxy: tuple[float, float, float, float]
    label: str = "defect"
    score: float = 1.0
    # True when the box is only a grid cell (the model named a region, not a box): matched more loosely.
    from_cell: bool = False

    @property
    def width(self) -> float:
        return max(0.0, self.xyxy[2] - self.xyxy[0])

    @property
    def height(self) -> float:
        return max(0.0, self.xyxy[3] - self.xyxy[1])

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.xyxy
        return ((x0 + x1) / 2, (y0 + y1) / 2)

    def to_dict(self) -> dict:
        d = {"label": self.label, "bbox_xyxy": [round(v, 1) for v in self.xyxy], "score": round(self.score, 4)}
        if self.from_cell:
            d["from_cell"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Box":
        return cls(
            tuple(float(v) for v in d["bbox_xyxy"]),  # type: ignore[arg-type]
            d.get("label", "defect"),
            float(d.get("score", 1.0)),
            bool(d.get("from_cell", False)),
        )


@dataclass(frozen=True)
class GoldBox:
    label: str
    xyxy: tuple[int, int, int, int]
    extra: dict = field(default_factory=dict, compare=False)

    def as_box(self) -> Box:
        return Box(tuple(float(v) for v in self.xyxy), self.label)  # type: ignore[arg-type]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def centre_inside(pred: Sequence[float], gold: Sequence[float]) -> bool:
    cx, cy = (pred[0] + pred[2]) / 2, (pred[1] + pred[3]) / 2
    return gold[0] <= cx <= gold[2] and gold[1] <= cy <= gold[3]


def hits(pred: Box, gold: Sequence[float]) -> bool:
    """Localisation rule: IoU >= 0.1 or predicted centre inside the gold box; a grid cell hits if it overlaps the box."""
    if pred.from_cell:
        return intersects(pred.xyxy, gold)
    return iou(pred.xyxy, gold) >= IOU_HIT or centre_inside(pred.xyxy, gold)


def cell_box(cell: int, width: float, height: float, x0: float = 0.0, y0: float = 0.0) -> tuple[float, float, float, float]:
    """Pixel rectangle of 3x3 cell 1..9 (row-major) inside the region (x0, y0, x0+width, y0+height)."""
    if not 1 <= cell <= GRID * GRID:
        raise ValueError(f"grid cell must be 1..{GRID * GRID}, got {cell}")
    r, c = divmod(cell - 1, GRID)
    return (x0 + c * width / GRID, y0 + r * height / GRID, x0 + (c + 1) * width / GRID, y0 + (r + 1) * height / GRID)


def cell_of_point(x: float, y: float, width: float, height: float) -> int:
    c = min(GRID - 1, max(0, int(x * GRID / width)))
    r = min(GRID - 1, max(0, int(y * GRID / height)))
    return r * GRID + c + 1


def place_words(xyxy: Sequence[float], width: float, height: float) -> str:
    """'upper-left', 'centre', ... plus 'edge' when the box touches the image border."""
    cx, cy = (xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2
    name = CELL_NAMES[cell_of_point(cx, cy, width, height)]
    edges = []
    if xyxy[0] <= 1:
        edges.append("left")
    if xyxy[2] >= width - 1:
        edges.append("right")
    if xyxy[1] <= 1:
        edges.append("top")
    if xyxy[3] >= height - 1:
        edges.append("bottom")
    return f"{name} (touching the {' and '.join(edges)} edge)" if edges else name


def clip_box(xyxy: Sequence[float], width: float, height: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = xyxy
    x0, x1 = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
    y0, y1 = sorted((min(max(y0, 0.0), height), min(max(y1, 0.0), height)))
    return (x0, y0, x1, y1)


def merge_overlapping(boxes: Iterable[Box], iou_thr: float = 0.3) -> list[Box]:
    """Greedy NMS-style merge: overlapping boxes (IoU >= thr or one inside the other) fuse into their union."""
    out: list[Box] = []
    for b in sorted(boxes, key=lambda b: -b.score):
        for i, o in enumerate(out):
            if o.from_cell == b.from_cell and (
                iou(o.xyxy, b.xyxy) >= iou_thr or centre_inside(b.xyxy, o.xyxy) and b.area <= o.area
            ):
                u = (min(o.xyxy[0], b.xyxy[0]), min(o.xyxy[1], b.xyxy[1]), max(o.xyxy[2], b.xyxy[2]), max(o.xyxy[3], b.xyxy[3]))
                out[i] = Box(u, o.label, max(o.score, b.score), o.from_cell)
                break
        else:
            out.append(b)
    return out
