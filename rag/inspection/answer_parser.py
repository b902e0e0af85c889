"""Turn a VLM reply into an Answer: JSON (repaired when slightly broken) or free text. Unusable -> Answer.error.

An Answer with `error` set is never scored as a verdict; `defective is None` without error is an abstention.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from rag.inspection.boxes import Box, cell_box, clip_box
from rag.inspection.labels import DEFECT_TYPES

CELL_WORDS = {
    "upper-left": 1, "top-left": 1, "top": 2, "upper-center": 2, "upper-centre": 2, "top-center": 2, "top-centre": 2,
    "upper-right": 3, "top-right": 3, "left": 4, "center-left": 4, "centre-left": 4, "center": 5, "centre": 5,
    "middle": 5, "right": 6, "center-right": 6, "centre-right": 6, "lower-left": 7, "bottom-left": 7, "bottom": 8,
    "lower-center": 8, "lower-centre": 8, "bottom-center": 8, "bottom-centre": 8, "lower-right": 9, "bottom-right": 9,
}  # fmt: skip

_TYPE_SYNONYMS = {
    "blow hole": "blowhole", "blow_hole": "blowhole", "pit": "blowhole", "pore": "blowhole",
    "broken": "break", "chip": "break", "chipped": "break", "cracks": "crack",
    "frayed": "fray", "fraying": "fray", "unevenness": "uneven", "uneven grinding": "uneven",
    "open circuit": "open", "broken trace": "open", "short circuit": "short", "mouse bite": "mousebite",
    "mouse_bite": "mousebite", "spurious copper": "spurious_copper", "spurious-copper": "spurious_copper",
    "pinhole": "pin_hole", "pin hole": "pin_hole", "pin-hole": "pin_hole",
}  # fmt: skip
_CONF_WORDS = {"very high": 0.95, "high": 0.9, "medium": 0.6, "moderate": 0.6, "low": 0.3, "very low": 0.1}


@dataclass(frozen=True)
class Answer:
    """One verdict about one image (VLM or baseline), boxes in image pixels."""

    defective: bool | None
    types: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()
    confidence: float | None = None
    error: str | None = None
    raw: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def abstained(self) -> bool:
        return self.error is None and self.defective is None

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "error"
        return {True: "defective", False: "ok", None: "uncertain"}[self.defective]

    def with_(self, **changes: Any) -> "Answer":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "defective": self.defective,
            "types": list(self.types),
            "boxes": [b.to_dict() for b in self.boxes],
            "confidence": self.confidence,
            "error": self.error,
            "raw": self.raw,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Answer":
        return cls(
            defective=d.get("defective"),
            types=tuple(d.get("types", ())),
            boxes=tuple(Box.from_dict(b) for b in d.get("boxes", ())),
            confidence=d.get("confidence"),
            error=d.get("error"),
            raw=d.get("raw"),
            extra=d.get("extra", {}),
        )


def error_answer(message: str, raw: str | None = None) -> Answer:
    return Answer(defective=None, error=message, raw=raw)


# --- JSON extraction and repair --------------------------------------------------------------------
# Replies reach the parser only when the model finished normally (the client raises on finish_reason
# "length"). Even then a reply can stop mid-answer; closing its brackets would invent a verdict from half a
# box list, so only a missing final '}' after a complete value is repaired. Anything cut inside a string, a
# list, or after ',' / ':' is a truncated reply: an error, never cached, asked again next run.
def _balanced_object(text: str) -> tuple[str | None, str | None]:
    """(the first {...} block, None) or (None, why it is truncated); a missing final '}' is closed."""
    start = text.find("{")
    if start < 0:
        return None, None
    stack: list[str] = []
    in_str = False
    esc = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if stack and stack[-1] == ch:
                stack.pop()
            if not stack:
                return text[start : i + 1], None
    body = text[start:].rstrip()
    if in_str:
        return None, "truncated reply: JSON ends inside a string"
    if "]" in stack:
        return None, "truncated reply: JSON ends inside an open list"
    if body.endswith((",", ":", "{")):
        return None, f"truncated reply: JSON ends after {body[-1]!r}"
    return body + "".join(reversed(stack)), None


def _repair(candidate: str) -> str:
    s = candidate.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    s = re.sub(r"//[^\n]*", "", s)  # JS comments
    if '"' not in s:
        s = s.replace("'", '"')
    s = re.sub(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)\s*:", r'\1"\2":', s)  # unquoted keys
    s = re.sub(r"\bTrue\b", "true", s)
    s = re.sub(r"\bFalse\b", "false", s)
    s = re.sub(r"\bNone\b", "null", s)
    s = re.sub(r",\s*([}\]])", r"\1", s)  # trailing commas
    return s


def _extract(text: str) -> tuple[dict[str, Any] | None, str | None]:
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    blob, truncated = _balanced_object(fenced.group(1) if fenced else text)
    if blob is None:
        return None, truncated
    for attempt in (blob, _repair(blob)):
        try:
            value = json.loads(attempt)
        except json.JSONDecodeError:
            continue
        return (value, None) if isinstance(value, dict) else (None, None)
    return None, None


def extract_json(text: str) -> dict[str, Any] | None:
    """Parse the JSON object in a reply (code fences, prose around it, small syntax slips tolerated).

    None for no object and for a truncated one (see above)."""
    return _extract(text)[0]


# --- field normalisation ---------------------------------------------------------------------------
def normalise_type(name: str) -> str:
    t = " ".join(str(name).lower().replace("-", " ").split())
    if t.replace(" ", "_") in DEFECT_TYPES:
        return t.replace(" ", "_")
    if t in _TYPE_SYNONYMS:
        return _TYPE_SYNONYMS[t]
    for syn, canon in _TYPE_SYNONYMS.items():  # "a small crack" -> crack
        if re.search(rf"\b{re.escape(syn)}\b", t):
            return canon
    for canon in DEFECT_TYPES:
        if re.search(rf"\b{canon.replace('_', '[ _]')}\b", t):
            return canon
    return t.replace(" ", "_") or "other"


def _verdict(value: Any) -> bool | None | str:
    """True/False/None(uncertain) or the string 'invalid'."""
    if isinstance(value, bool):
        return value
    if value is None:
        return "invalid"
    v = str(value).strip().lower()
    if v in ("yes", "true", "y", "defective", "defect", "1"):
        return True
    if v in ("no", "false", "n", "ok", "none", "not defective", "defect-free", "0"):
        return False
    if v in ("uncertain", "unsure", "unknown", "maybe", "cannot tell", "can't tell", "not sure"):
        return None
    return "invalid"


def _confidence(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        v = value.strip().lower().rstrip("%")
        if v in _CONF_WORDS:
            return _CONF_WORDS[v]
        try:
            value = float(v) / (100 if value.strip().endswith("%") else 1)
        except ValueError:
            return None
    try:
        c = float(value)
    except (TypeError, ValueError):
        return None
    if c > 1.0:
        c = c / 100.0 if c <= 100 else 1.0
    return max(0.0, min(1.0, c))


def _as_quad(item: Any) -> list[float] | None:
    if isinstance(item, dict):
        for key in ("bbox", "box", "bbox_xyxy", "xyxy", "coordinates"):
            if key in item:
                return _as_quad(item[key])
        if all(k in item for k in ("x0", "y0", "x1", "y1")):
            item = [item["x0"], item["y0"], item["x1"], item["y1"]]
        elif all(k in item for k in ("x", "y", "w", "h")):
            item = [item["x"], item["y"], item["x"] + item["w"], item["y"] + item["h"]]
        else:
            return None
    if isinstance(item, (list, tuple)) and len(item) == 4:
        try:
            return [float(v) for v in item]
        except (TypeError, ValueError):
            return None
    return None


def _box_label(item: Any, default: str) -> str:
    if isinstance(item, dict):
        for key in ("label", "type", "defect_type"):
            if item.get(key):
                return normalise_type(item[key])
    return default


def _to_pixels(q: list[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Fractions (all <= 1.5: models overshoot 1 a little), per-mille (<= 1000 and beyond the image) or pixels."""
    if max(q) <= 1.5:
        q = [q[0] * width, q[1] * height, q[2] * width, q[3] * height]
    elif (q[0] > width or q[2] > width or q[1] > height or q[3] > height) and max(q) <= 1000:
        q = [q[0] * width / 1000, q[1] * height / 1000, q[2] * width / 1000, q[3] * height / 1000]
    return clip_box(q, width, height)


def _cells(value: Any) -> list[int]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, bool):
            continue
        if isinstance(item, (int, float)) and 1 <= int(item) <= 9:
            out.append(int(item))
        elif isinstance(item, str):
            s = item.strip().lower().replace(" ", "-").replace("_", "-")
            if s.isdigit() and 1 <= int(s) <= 9:
                out.append(int(s))
            elif s in CELL_WORDS:
                out.append(CELL_WORDS[s])
    return sorted(set(out))


def parse_structured(text: str, width: int, height: int, allow_uncertain: bool = True) -> Answer:
    """JSON reply -> Answer. Boxes/cells are converted to pixels of the (width x height) image that was sent."""
    if not (text or "").strip():
        return error_answer("empty reply", text)
    data, truncated = _extract(text or "")
    if data is None:
        return error_answer(truncated or "malformed reply: no parseable JSON object", text)
    key = next((k for k in ("defective", "is_defective", "defect", "has_defect", "answer") if k in data), None)
    if key is None:
        return error_answer("malformed reply: JSON has no 'defective' field", text)
    verdict = _verdict(data[key])
    if verdict == "invalid":
        return error_answer(f"malformed reply: 'defective' is {data[key]!r}", text)
    raw_types = data.get("defect_types", data.get("types", data.get("defect_type", [])))
    if isinstance(raw_types, str):
        raw_types = [t for t in re.split(r"[,;/]", raw_types) if t.strip()]
    types = tuple(dict.fromkeys(normalise_type(t) for t in (raw_types or []) if str(t).strip()))
    types = tuple(t for t in types if t not in ("none", "no_defect", "n/a"))
    boxes: list[Box] = []
    default_label = types[0] if len(types) == 1 else "defect"
    for item in data.get("boxes", data.get("bboxes", [])) or []:
        q = _as_quad(item)
        if q is not None:
            xyxy = _to_pixels(q, width, height)
            if xyxy[2] > xyxy[0] and xyxy[3] > xyxy[1]:
                boxes.append(Box(xyxy, _box_label(item, default_label)))
    cells = _cells(data.get("grid_cells", data.get("grid_cell", data.get("cells", []))) or [])
    if not boxes:  # cells only count when no box was given
        boxes = [Box(cell_box(c, width, height), default_label, from_cell=True) for c in cells]
    extra = {"cells": cells} if cells else {}
    if verdict is None and not allow_uncertain:
        extra["uncertain_when_forced"] = True
    if verdict is not True:
        types, boxes = (), []
    return Answer(verdict, types, tuple(boxes), _confidence(data.get("confidence")), None, text, extra)  # type: ignore[arg-type]


_NEG = re.compile(
    r"\b(no (visible |obvious |apparent )?(defects?|damage|anomal\w*|flaws?|issues?)|not defective|defect[- ]free|"
    r"free (of|from) (any )?defects?|no defect)\b",
    re.I,
)
_UNC = re.compile(r"\b(uncertain|unsure|not sure|cannot (tell|determine)|can't (tell|determine)|unclear)\b", re.I)
_POS = re.compile(r"\b(defect(ive)?|damage[d]?|flaw|anomal\w*)\b", re.I)


def parse_plain(text: str, width: int, height: int) -> Answer:
    """Free-text reply -> Answer from its opening verdict word, type names and place words (3x3 cells)."""
    t = (text or "").strip()
    if not t:
        return error_answer("empty reply", text)
    head = t[:160]
    if re.match(r"\W*no defect", head, re.I) or (_NEG.search(head) and not re.match(r"\W*defective\s*:", head, re.I)):
        return Answer(False, raw=text)
    if re.match(r"\W*(uncertain|unsure)", head, re.I) or (_UNC.search(head) and not re.match(r"\W*defective", head, re.I)):
        return Answer(None, raw=text)
    lowered = t.lower()
    types = []
    for canon in DEFECT_TYPES:
        if re.search(rf"\b{canon.replace('_', '[ _-]?')}s?\b", lowered):
            types.append(canon)
    for syn, canon in _TYPE_SYNONYMS.items():
        if canon not in types and re.search(rf"\b{re.escape(syn)}\b", lowered):
            types.append(canon)
    if not (re.match(r"\W*defective", head, re.I) or _POS.search(t) or types):
        return error_answer("free-text reply states no verdict", text)
    found = re.findall(r"\b(?:upper|lower|top|bottom|center|centre)[- ](?:left|right|center|centre)\b", lowered)
    cells = sorted({CELL_WORDS[w.replace(" ", "-")] for w in found if w.replace(" ", "-") in CELL_WORDS})
    label = types[0] if len(types) == 1 else "defect"
    boxes = tuple(Box(cell_box(c, width, height), label, from_cell=True) for c in cells)
    return Answer(True, tuple(types), boxes, None, None, text, {"cells": cells} if cells else {})


def parse_answer(text: str, variant: str, width: int, height: int) -> Answer:
    if variant == "plain":
        return parse_plain(text, width, height)
    return parse_structured(text, width, height, allow_uncertain=variant == "uncertain")
