"""Prompt variants for the VLM inspector: plain (free text), structured (forced JSON), uncertain (JSON, may abstain)."""

from __future__ import annotations

import hashlib

from rag.inspection.labels import DEFECT_WORDS

VARIANTS = ("plain", "structured", "uncertain")

SYSTEM = (
    "You are a meticulous industrial visual-inspection assistant. You only report what is visible in the image. "
    "Normal texture (grinding streaks, scan noise, printed markings, drill holes in pads) is not a defect."
)

_VOCAB = "\n".join(f"- {name}: {words}" for name, words in DEFECT_WORDS.items())

_PLAIN = (
    "Inspect this image of a manufactured part (a magnetic tile surface or a printed circuit board scan). "
    "Is there any visible defect? Answer in one or two sentences: start with 'Defective:' or 'No defect:', "
    "then say what the defect is and where it is in the image."
)

_JSON_SPEC = """Inspect this image of a manufactured part (a magnetic tile surface or a printed circuit board scan).
Known defect types:
{vocab}
Reply with ONE JSON object and nothing else:
{{"defective": {choices}, "defect_types": [names from the list, or "other"], "boxes": [[x0, y0, x1, y1], ...], "grid_cells": [1-9, ...], "confidence": 0.0-1.0}}
boxes: one per defect, as fractions of the image width and height (0 = left/top, 1 = right/bottom).
grid_cells: the cells of a 3x3 grid over the image that contain a defect, numbered 1 2 3 (top row), 4 5 6, 7 8 9 (bottom row); give them if you cannot give boxes.
confidence: how sure you are of the "defective" answer.
If there is no defect: "defective": "no", empty lists."""

_FORCED = '"yes" or "no"'
_UNCERTAIN = '"yes", "no" or "uncertain"'
_UNCERTAIN_RULE = (
    '\nIf you cannot tell from the image whether there is a defect, answer "defective": "uncertain" '
    "instead of guessing: a wrong answer is worse than an honest \"uncertain\"."
)


def prompt_text(variant: str) -> str:
    """The user prompt for one variant (the image goes alongside it)."""
    if variant == "plain":
        return _PLAIN
    if variant == "structured":
        return _JSON_SPEC.format(vocab=_VOCAB, choices=_FORCED)
    if variant == "uncertain":
        return _JSON_SPEC.format(vocab=_VOCAB, choices=_UNCERTAIN) + _UNCERTAIN_RULE
    raise ValueError(f"unknown prompt variant {variant!r}: choose one of {', '.join(VARIANTS)}")


def prompt_key(variant: str) -> str:
    """Cache key of a prompt: variant name plus a hash of its exact wording (edits invalidate old answers)."""
    digest = hashlib.sha256((SYSTEM + "\n" + prompt_text(variant)).encode()).hexdigest()[:10]
    return f"{variant}@{digest}"
