"""Gold labels for the inspection set: build them from ground_truth.jsonl, load them back.

inspection_labels.json (repo root) = {"data_root": ..., "images": [ImageLabel...]} where each
image has file (relative to the data root), source, is_defective, defect_types, boxes, size,
template_file, size_bucket and a short human-readable note ("2 defects: ...").
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rag.config import shared_data_dir
from rag.errors import MmragError
from rag.inspection.boxes import TINY_AREA_FRAC, GoldBox, place_words

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LABELS = REPO_ROOT / "inspection_labels.json"

# Plain-language descriptions for people (and the VLM prompts' vocabulary).
DEFECT_WORDS: dict[str, str] = {
    "blowhole": "small dark pit (blowhole)",
    "break": "chipped-off piece (break)",
    "crack": "thin crack",
    "fray": "frayed, ragged edge (fray)",
    "uneven": "unevenly ground, blotchy patch (uneven)",
    "open": "broken copper trace (open)",
    "short": "copper bridge between traces (short)",
    "mousebite": "bitten-out notch in a trace edge (mousebite)",
    "spur": "copper spur sticking out of a trace",
    "spurious_copper": "stray copper blob (spurious copper)",
    "pin_hole": "pin hole in the copper",
}
SOURCE_TYPES: dict[str, tuple[str, ...]] = {
    "magnetic_tile": ("blowhole", "break", "crack", "fray", "uneven"),
    "deeppcb": ("open", "short", "mousebite", "spur", "spurious_copper", "pin_hole"),
}
DEFECT_TYPES: tuple[str, ...] = tuple(t for ts in SOURCE_TYPES.values() for t in ts)


def inspection_data_dir() -> Path:
    return shared_data_dir() / "inspection"


@dataclass
class ImageLabel:
    file: str
    source: str
    is_defective: bool
    defect_types: list[str]
    boxes: list[GoldBox]
    size: tuple[int, int]  # (width, height)
    note: str = ""
    template_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def area(self) -> int:
        return self.size[0] * self.size[1]

    def box_area_frac(self, box: GoldBox) -> float:
        x0, y0, x1, y1 = box.xyxy
        return max(0, x1 - x0) * max(0, y1 - y0) / self.area

    @property
    def size_bucket(self) -> str:
        """'none' (defect-free), 'tiny' (every gold box < 1% of the image) or 'larger'."""
        if not self.is_defective:
            return "none"
        if not self.boxes:
            return "larger"
        return "tiny" if max(self.box_area_frac(b) for b in self.boxes) < TINY_AREA_FRAC else "larger"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "source": self.source,
            "is_defective": self.is_defective,
            "defect_types": self.defect_types,
            "boxes": [
                {
                    "label": b.label,
                    "bbox_xyxy": list(b.xyxy),
                    "area_frac": round(self.box_area_frac(b), 5),
                    "place": place_words(b.xyxy, *self.size),
                    **({"defect_px": b.extra["defect_px"]} if "defect_px" in b.extra else {}),
                }
                for b in self.boxes
            ],
            "size": list(self.size),
            "size_bucket": self.size_bucket,
            "template_file": self.template_file,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImageLabel":
        try:
            return cls(
                file=d["file"],
                source=d["source"],
                is_defective=bool(d["is_defective"]),
                defect_types=list(d.get("defect_types", [])),
                boxes=[
                    GoldBox(b["label"], tuple(int(v) for v in b["bbox_xyxy"]), {k: b[k] for k in ("defect_px",) if k in b})  # type: ignore[arg-type]
                    for b in d.get("boxes", [])
                ],
                size=(int(d["size"][0]), int(d["size"][1])),
                note=d.get("note", ""),
                template_file=d.get("template_file"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise MmragError(f"bad label entry {d.get('file', '?')!r}: missing or malformed field {exc}") from None


def place_phrase(xyxy: tuple[float, ...] | list[float], width: float, height: float) -> str:
    """'in the centre', 'near the upper-left', 'at the top, touching the top edge', 'across the full width at the top'."""
    words = place_words(xyxy, width, height)
    name, _, edge = words.partition(" (touching the ")
    edges = edge.rstrip(" edge)").split(" and ") if edge else []
    if "left" in edges and "right" in edges:
        return f"across the full width{'' if name in ('centre', 'left', 'right') else ' at the ' + name.split('-')[0]}".replace("upper", "top").replace("lower", "bottom")
    if "top" in edges and "bottom" in edges:
        return "along the full height" + ("" if name in ("centre", "top", "bottom") else f" on the {name.split('-')[-1]}")
    base = {"centre": "in the centre", "top": "at the top", "bottom": "at the bottom", "left": "on the left", "right": "on the right"}
    text = base.get(name, f"near the {name}")
    return f"{text}, touching the {' and '.join(edges)} edge" if edges else text


def _extent_words(box: GoldBox) -> str:
    """Size of the defect itself: from the template difference for PCBs (their boxes are loose frames)."""
    ext = box.extra.get("defect_px")
    w, h = ext if ext else (box.xyxy[2] - box.xyxy[0], box.xyxy[3] - box.xyxy[1])
    return f"{max(w, h)} px" if min(w, h) * 2 >= max(w, h) else f"{w}x{h} px"


def human_note(label: ImageLabel) -> str:
    """A short note for a person: what, how big, where. Written from the boxes, never copied from the source note."""
    if not label.is_defective:
        if label.source == "deeppcb":
            return "No defect: clean PCB artwork (defect-free template scan)."
        return "No defect: evenly ground tile surface with only the usual grinding streaks."
    w, h = label.size
    boxes = sorted(label.boxes, key=lambda b: -(b.xyxy[2] - b.xyxy[0]) * (b.xyxy[3] - b.xyxy[1]))
    if label.source == "deeppcb":
        short = {"spurious_copper": "stray copper blob", "pin_hole": "pin hole", "open": "broken trace (open)",
                 "short": "short between traces", "mousebite": "mousebite notch", "spur": "spur"}  # fmt: skip
        parts = [f"{_extent_words(b)} {short.get(b.label, b.label)} {place_phrase(b.xyxy, w, h)}" for b in boxes]
        shown = parts[:4] + ([f"{len(parts) - 4} more"] if len(parts) > 4 else [])
        return f"{len(parts)} defect{'s' if len(parts) > 1 else ''}: " + "; ".join(shown) + "."
    big = boxes[0]
    pct = 100 * label.box_area_frac(big)
    size = f"{_extent_words(big)}" + (f", {pct:.0f}% of the image" if pct >= 1 else "")
    text = f"{DEFECT_WORDS.get(big.label, big.label)}, {size}, {place_phrase(big.xyxy, w, h)}"
    if len(boxes) > 1:
        text += f" (+{len(boxes) - 1} smaller region{'s' if len(boxes) > 2 else ''})"
    return text[0].upper() + text[1:] + "."


def _pcb_defect_extents(label: ImageLabel, data_root: Path) -> None:
    """Measure each PCB defect's true pixel extent: largest changed blob vs the aligned template inside its box."""
    import cv2
    import numpy as np

    if not label.template_file:
        return
    test = cv2.imread(str(data_root / label.file), cv2.IMREAD_GRAYSCALE)
    tmpl = cv2.imread(str(data_root / label.template_file), cv2.IMREAD_GRAYSCALE)
    if test is None or tmpl is None or test.shape != tmpl.shape:
        return
    _, a = cv2.threshold(test, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    _, b = cv2.threshold(tmpl, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    diff = (cv2.absdiff(a, b) > 0).astype(np.uint8)
    for box in label.boxes:
        x0, y0, x1, y1 = box.xyxy
        n, _, stats, _ = cv2.connectedComponentsWithStats(diff[y0:y1, x0:x1])
        if n > 1:
            i = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            box.extra["defect_px"] = [int(stats[i, cv2.CC_STAT_WIDTH]), int(stats[i, cv2.CC_STAT_HEIGHT])]


def build_labels(ground_truth: Path, measure_pcb: bool = True) -> list[ImageLabel]:
    """Read the dataset's ground_truth.jsonl and write our label records (one per inspected image)."""
    if not ground_truth.is_file():
        raise MmragError(f"ground truth not found: {ground_truth} (set MMRAG_SHARED_DATA to the shared data folder)")
    out = []
    for n, line in enumerate(ground_truth.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MmragError(f"{ground_truth}:{n}: not JSON ({exc.msg})") from None
        label = ImageLabel.from_dict(row)
        if measure_pcb:
            _pcb_defect_extents(label, ground_truth.parent)
        label.note = human_note(label)
        out.append(label)
    return out


def write_labels(labels: Iterable[ImageLabel], path: Path, data_root: str) -> None:
    images = [lab.to_dict() for lab in labels]
    payload = {
        "description": "Gold labels for mmrag inspection (built by scripts/build_inspection_labels.py from ground_truth.jsonl)",
        "data_root": data_root,
        "count": len(images),
        "images": images,
    }
    path.write_text(json.dumps(payload, indent=1) + "\n")


def load_labels(path: Path | str = DEFAULT_LABELS) -> dict[str, ImageLabel]:
    """file (relative to the data root, e.g. 'images/pcb_..._test.jpg') -> ImageLabel."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise MmragError(f"labels file not found: {path} (build it: python scripts/build_inspection_labels.py)") from None
    except json.JSONDecodeError as exc:
        raise MmragError(f"labels file {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    rows = payload.get("images") if isinstance(payload, dict) else payload
    if not isinstance(rows, list):
        raise MmragError(f"labels file {path} has no 'images' list")
    labels = [ImageLabel.from_dict(r) for r in rows]
    return {lab.file: lab for lab in labels}


def resolve_data_root(labels_path: Path | str) -> Path:
    """Where the labelled images live: the file's data_root, relative to the labels file (absolute as written).

    $MMRAG_SHARED_DATA never overrides a data_root that exists; it is used only when that folder is missing
    (a checkout without ../shared/data), with a warning naming both. No data_root: the labels file's folder.
    """
    labels_path = Path(labels_path)
    try:
        payload = json.loads(labels_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MmragError(f"cannot read labels file {labels_path}: {exc}") from None
    declared = payload.get("data_root") if isinstance(payload, dict) else None
    root = Path(declared or ".")
    if not root.is_absolute():
        root = (labels_path.resolve().parent / root).resolve()
    shared = inspection_data_dir()
    if declared and not root.is_dir() and shared.is_dir():
        log.warning("labels %s: data_root %s does not exist; using the shared data folder %s instead",
                    labels_path, root, shared)
        return shared
    return root


def baseline_split(labels: Iterable[ImageLabel]) -> dict[str, str]:
    """Deterministic tune/test split for calibrating the pixel baseline: every 3rd image of each
    (source, kind) group, sorted by file, is 'tune'; the rest is 'test'. Thresholds are chosen on tune only."""
    groups: dict[tuple[str, str], list[str]] = {}
    for lab in labels:
        kind = lab.defect_types[0] if lab.source == "magnetic_tile" and lab.defect_types else (
            "defective" if lab.is_defective else "free")
        groups.setdefault((lab.source, kind), []).append(lab.file)
    split = {}
    for files in groups.values():
        for i, f in enumerate(sorted(files)):
            split[f] = "tune" if i % 3 == 0 else "test"
    return split


def tune_set_digest(split: dict[str, str]) -> str:
    """sha256 of the sorted tune-split file names: identifies the set the pixel baseline was fitted on."""
    return hashlib.sha256("\n".join(sorted(f for f, part in split.items() if part == "tune")).encode()).hexdigest()
