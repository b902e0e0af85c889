"""Pixel-grounded defect detector (no model weights): the "grounding" side of the VLM comparison.

* PCB scan + aligned defect-free template: binarise both, register (phase correlation), compare with a
  +-TOL px tolerance band (so 1-2 px edge jitter is not a defect), open/close morphologically, keep blobs of
  >= MIN_AREA px, and name each blob from its topology (extra copper touching 0/1/2+ traces = spurious
  copper/spur/short; missing copper = pin hole/mousebite/open).
* PCB scan without a template (the templates themselves): design-rule check, copper islands or holes
  smaller than any legitimate feature seen on the tune-split templates are flagged.
* Magnetic tile (reference-free): remove the vertical grinding-streak profile and the slow illumination
  (large median), robust z-score of the residual, dark blobs at z < -DARK_Z with >= TILE_MIN_AREA px are
  defects (size calibrated on the tune-split defect-free tiles only).

Thresholds were chosen on the tune split of rag.inspection.labels.baseline_split (scripts/tune_pixel_baseline.py);
the report gives test-split figures separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from rag.errors import MmragError
from rag.inspection.boxes import Box
from rag.inspection.labels import ImageLabel, baseline_split, tune_set_digest

# The tune split every threshold below was chosen on (inspection_labels.json, 39 images); tune/test figures
# mean something only for labels holding exactly that tune set (scripts/tune_pixel_baseline.py checks it).
TUNE_SET_SHA256 = "3452ef52bd4b8c776375caef587882d84421452af306884ad7db6f6d89e56e82"
# --- PCB with template (chosen on the tune split: best box F1 of a 2x3x4 grid, F1 0.901, see scripts/tune_pixel_baseline.py)
PCB_TOL = 1  # px of edge jitter tolerated
PCB_OPEN = 3  # opening kernel removing thin slivers left by the tolerance band
PCB_MIN_AREA = 12  # px, after opening
# --- PCB without template: islands/holes below half of the smallest legitimate one on tune templates (350 px)
PCB_DRC_MAX_AREA = 175
PCB_DRC_MIN_AREA = 8  # ignore 1-px JPEG specks
# --- magnetic tile, reference-free
DARK_Z = 6.0  # robust z of the residual (a priori, not tuned)
TILE_MIN_AREA = 90  # px: 1.25 x largest dark blob on the tune-split defect-free tiles (70 px), rounded
TILE_BORDER = 3  # px ignored at the image border (resampling ring)


def fitted_split(labels: "Iterable[ImageLabel]") -> dict[str, str] | None:
    """file -> 'tune' | 'test' when these labels are the set the thresholds were fitted on, else None."""
    split = baseline_split(labels)
    return split if tune_set_digest(split) == TUNE_SET_SHA256 else None


@dataclass
class BaselineResult:
    boxes: list[Box]
    method: str  # "template-diff" | "pcb-drc" | "tile-stats"
    defective: bool
    details: dict = field(default_factory=dict)


def _read_gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise MmragError(f"cannot read image {path} (missing or not an image)")
    return img


def _copper(gray: np.ndarray) -> np.ndarray:
    """1 where copper (dark on DeepPCB scans), via Otsu."""
    _, b = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    return b.astype(np.uint8)


def looks_binarised(gray: np.ndarray) -> bool:
    """PCB scans are black/white: almost every pixel sits near 0 or 255."""
    return float(np.mean((gray < 40) | (gray > 215))) > 0.9


def register(test: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Shift the template onto the test image (phase correlation; DeepPCB pairs differ by a translation)."""
    (dx, dy), _ = cv2.phaseCorrelate(np.float32(template), np.float32(test))
    if abs(dx) > 20 or abs(dy) > 20:  # not a plausible misalignment of an "aligned" pair
        dx, dy = 0.0, 0.0
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    warped = cv2.warpAffine(template, m, template.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped, (float(dx), float(dy))


def _label_count(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def _classify_pcb(extra: bool, comp: np.ndarray, test_cu: np.ndarray, tmpl_cu: np.ndarray, bbox: tuple[int, int, int, int]) -> str:
    x0, y0, x1, y1 = bbox
    h, w = test_cu.shape
    pad = 4
    sx0, sy0, sx1, sy1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    if extra:
        # how many separate template traces does the extra copper touch? Its edge can sit ~tol+1 px off the
        # template copper (tolerance band + opening), so look 3 px around it.
        ring = cv2.dilate(comp, np.ones((7, 7), np.uint8)) & (1 - comp)
        n, lab = cv2.connectedComponents(tmpl_cu[sy0:sy1, sx0:sx1], connectivity=8)
        touched = set(np.unique(lab[ring[sy0:sy1, sx0:sx1] > 0])) - {0}
        return "spurious_copper" if not touched else ("short" if len(touched) >= 2 else "spur")
    # missing copper: an enclosed hole (its background blob in the test image is no bigger than itself) = pin hole;
    # splitting a trace = open; a bite out of an edge = mousebite
    n, lab, stats, _ = cv2.connectedComponentsWithStats((1 - test_cu).astype(np.uint8), connectivity=4)
    under = set(np.unique(lab[(comp > 0) & (test_cu == 0)])) - {0}
    area = int(comp.sum())
    if under and all(stats[i, cv2.CC_STAT_AREA] <= max(3 * area, area + 60) for i in under):
        return "pin_hole"
    if _label_count(test_cu[sy0:sy1, sx0:sx1]) > _label_count(tmpl_cu[sy0:sy1, sx0:sx1]):
        return "open"
    return "mousebite"


def detect_pcb_with_template(
    test_gray: np.ndarray,
    template_gray: np.ndarray,
    tol: int = PCB_TOL,
    open_px: int = PCB_OPEN,
    min_area: int = PCB_MIN_AREA,
) -> BaselineResult:
    if test_gray.shape != template_gray.shape:
        raise MmragError(f"template size {template_gray.shape[::-1]} differs from image size {test_gray.shape[::-1]}")
    template_gray, shift = register(test_gray, template_gray)
    test_cu, tmpl_cu = _copper(test_gray), _copper(template_gray)
    k = np.ones((2 * tol + 1, 2 * tol + 1), np.uint8)
    extra = test_cu & (1 - cv2.dilate(tmpl_cu, k))
    missing = (1 - test_cu) & cv2.erode(tmpl_cu, k)
    boxes: list[Box] = []
    for is_extra, mask in ((True, extra), (False, missing)):
        if open_px > 1:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((open_px, open_px), np.uint8))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area < min_area:
                continue
            comp = (lab == i).astype(np.uint8)
            kind = _classify_pcb(is_extra, comp, test_cu, tmpl_cu, (x, y, x + w, y + h))
            score = float(min(1.0, area / (4 * max(1, min_area))))
            boxes.append(Box((x - 1.0, y - 1.0, x + w + 1.0, y + h + 1.0), kind, score))
    return BaselineResult(boxes, "template-diff", bool(boxes), {"shift_px": [round(shift[0], 2), round(shift[1], 2)]})


def detect_pcb_drc(gray: np.ndarray) -> BaselineResult:
    """No reference: flag copper islands / holes smaller than any legitimate feature."""
    cu = _copper(gray)
    h, w = cu.shape
    boxes: list[Box] = []
    for kind, mask in (("spurious_copper", cu), ("pin_hole", 1 - cu)):
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        for i in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[i])
            if x == 0 or y == 0 or x + bw >= w or y + bh >= h:  # cut by the scan border: size unknown
                continue
            if PCB_DRC_MIN_AREA <= area < PCB_DRC_MAX_AREA:
                boxes.append(Box((x - 1.0, y - 1.0, x + bw + 1.0, y + bh + 1.0), kind, 1.0 - area / PCB_DRC_MAX_AREA))
    return BaselineResult(boxes, "pcb-drc", bool(boxes))


def tile_zmap(gray: np.ndarray) -> np.ndarray:
    """Robust z-score of what is left after removing streaks (column profile) and slow illumination."""
    g = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 2.0)
    g = g - np.median(g, axis=0, keepdims=True) + float(np.median(g))
    k = min(255, max(15, int(min(g.shape) * 0.25)) | 1)
    background = cv2.medianBlur(np.clip(g, 0, 255).astype(np.uint8), k).astype(np.float32)
    r = g - background
    med = float(np.median(r))
    mad = float(np.median(np.abs(r - med))) * 1.4826 + 1e-6
    return (r - med) / mad


def dark_blobs(gray: np.ndarray) -> list[tuple[tuple[int, int, int, int], int]]:
    """(xyxy, area) of every dark anomaly blob, before the size threshold."""
    z = tile_zmap(gray)
    m = (z < -DARK_Z).astype(np.uint8)
    b = TILE_BORDER
    m[:b, :] = 0
    m[-b:, :] = 0
    m[:, :b] = 0
    m[:, -b:] = 0
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    return [((int(x), int(y), int(x + w), int(y + h)), int(a)) for x, y, w, h, a in stats[1:]]


def _classify_tile(xyxy: tuple[int, int, int, int], shape: tuple[int, int]) -> str:
    x0, y0, x1, y1 = xyxy
    h, w = shape
    bw, bh = x1 - x0, y1 - y0
    if x0 <= TILE_BORDER + 2 or y0 <= TILE_BORDER + 2 or x1 >= w - TILE_BORDER - 2 or y1 >= h - TILE_BORDER - 2:
        return "break"
    if max(bw, bh) >= 3 * max(1, min(bw, bh)):
        return "crack"
    if bw * bh > 0.05 * w * h:
        return "fray"
    return "blowhole"


def detect_tile(gray: np.ndarray) -> BaselineResult:
    boxes = [
        Box((x0 - 2.0, y0 - 2.0, x1 + 2.0, y1 + 2.0), _classify_tile((x0, y0, x1, y1), gray.shape), min(1.0, area / (2 * TILE_MIN_AREA)))
        for (x0, y0, x1, y1), area in dark_blobs(gray)
        if area >= TILE_MIN_AREA
    ]
    return BaselineResult(boxes, "tile-stats", bool(boxes))


def analyse(image_path: Path, template_path: Path | None = None) -> BaselineResult:
    """Run the right method for this image; see the module docstring."""
    gray = _read_gray(Path(image_path))
    if template_path is not None:
        return detect_pcb_with_template(gray, _read_gray(Path(template_path)))
    if looks_binarised(gray):
        return detect_pcb_drc(gray)
    return detect_tile(gray)


def detect(image_path: Path, template_path: Path | None = None) -> list[Box]:
    """Defect boxes (xyxy in image pixels, label, score) found by the pixel baseline."""
    return analyse(image_path, template_path).boxes
