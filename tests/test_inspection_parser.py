"""Answer parser: JSON repair, field normalisation, abstentions, free text; errors are never verdicts."""

from __future__ import annotations

import pytest

from rag.inspection.answer_parser import extract_json, normalise_type, parse_answer, parse_plain, parse_structured
from rag.inspection.boxes import cell_box
from rag.inspection.prompts import VARIANTS, prompt_key, prompt_text

W, H = 200, 100


def test_clean_json_with_fraction_boxes():
    a = parse_structured(
        '{"defective": "yes", "defect_types": ["Pin hole"], "boxes": [[0.1, 0.2, 0.3, 0.4]], "confidence": 0.8}', W, H
    )
    assert a.defective is True and a.error is None
    assert a.types == ("pin_hole",)
    assert a.boxes[0].xyxy == pytest.approx((20, 20, 60, 40))
    assert a.boxes[0].label == "pin_hole" and not a.boxes[0].from_cell
    assert a.confidence == 0.8


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"defective": "no", "defect_types": [], "boxes": [], "confidence": 0.9,}\n```',
        "Sure! Here is my answer: {'defective': 'no', 'confidence': 0.9} Hope that helps.",
        '{defective: False, confidence: 0.9}',
        '{"defective": "no", "confidence": 0.9',  # finished normally, only the closing brace forgotten
        "{\u201cdefective\u201d: \u201cno\u201d, \u201cconfidence\u201d: 0.9}",  # smart quotes
    ],
)
def test_slightly_broken_json_is_repaired(text):
    a = parse_structured(text, W, H)
    assert a.error is None, a.error
    assert a.defective is False and a.confidence == 0.9 and a.boxes == ()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"defective": true, "defect_types": ["crack"], "boxes": [[0.1, 0.2', "truncated reply: JSON ends inside an open list"),
        ('{"defective": "no", "confidence": 0.9, "boxes": [', "truncated reply: JSON ends inside an open list"),
        ('{"defective": true, "defect_types": ["cra', "truncated reply: JSON ends inside a string"),
        ('{"defective": true, "confidence":', "truncated reply: JSON ends after ':'"),
        ('{"defective": true,', "truncated reply: JSON ends after ','"),
        ("The tile looks fine to me.", "no parseable JSON"),
        ('{"answer_is": "yes"}', "no 'defective' field"),
        ('{"defective": "perhaps a little"}', "'defective' is"),
        ("", "empty reply"),
        ("  \n", "empty reply"),
    ],
)
def test_unusable_replies_are_errors_not_verdicts(text, reason):
    a = parse_structured(text, W, H)
    assert a.error is not None and reason in a.error
    assert a.defective is None and not a.abstained and a.verdict == "error"
    assert a.raw == text


def test_uncertain_is_an_abstention_and_flagged_when_forced():
    a = parse_answer('{"defective": "uncertain", "confidence": 0.3}', "uncertain", W, H)
    assert a.abstained and a.verdict == "uncertain" and a.error is None and a.confidence == 0.3
    forced = parse_answer('{"defective": "uncertain"}', "structured", W, H)
    assert forced.abstained and forced.extra.get("uncertain_when_forced") is True


def test_grid_cells_become_cell_boxes_only_without_boxes():
    a = parse_structured('{"defective": "yes", "defect_types": ["crack"], "grid_cells": [3, "lower-left"]}', W, H)
    assert [b.from_cell for b in a.boxes] == [True, True]
    assert [b.xyxy for b in a.boxes] == [cell_box(3, W, H), cell_box(7, W, H)]
    both = parse_structured('{"defective": "yes", "boxes": [[0, 0, 0.5, 0.5]], "grid_cells": [9]}', W, H)
    assert len(both.boxes) == 1 and not both.boxes[0].from_cell and both.extra["cells"] == [9]


def test_pixel_and_permille_boxes_and_dict_boxes():
    px = parse_structured('{"defective": true, "boxes": [[20, 10, 60, 50]]}', W, H)
    assert px.boxes[0].xyxy == (20, 10, 60, 50)
    permille = parse_structured('{"defective": true, "boxes": [[100, 500, 300, 900]]}', W, H)
    assert permille.boxes[0].xyxy == pytest.approx((20, 50, 60, 90))
    d = parse_structured('{"defective": "yes", "boxes": [{"bbox": [0.5, 0.5, 1.2, 1.0], "label": "mouse bite"}]}', W, H)
    assert d.boxes[0].xyxy == pytest.approx((100, 50, 200, 100)) and d.boxes[0].label == "mousebite"


def test_negative_answer_drops_boxes_and_types():
    a = parse_structured('{"defective": "no", "defect_types": ["crack"], "boxes": [[0, 0, 1, 1]]}', W, H)
    assert a.defective is False and a.types == () and a.boxes == ()


@pytest.mark.parametrize(("value", "expected"), [("85%", 0.85), (85, 0.85), ("high", 0.9), ("bogus", None), (1.0, 1.0)])
def test_confidence_forms(value, expected):
    import json

    a = parse_structured(json.dumps({"defective": "yes", "confidence": value}), W, H)
    assert a.confidence == expected


@pytest.mark.parametrize(
    ("name", "canon"),
    [("Pinhole", "pin_hole"), ("spurious copper", "spurious_copper"), ("a small crack", "crack"), ("Short circuit", "short"), ("scratch", "scratch")],
)
def test_type_normalisation(name, canon):
    assert normalise_type(name) == canon


@pytest.mark.parametrize(
    ("text", "verdict", "types"),
    [
        ("No defect: the surface is uniform.", False, ()),
        ("There are no visible defects in this image.", False, ()),
        ("Defective: a thin crack runs down the upper-left of the tile.", True, ("crack",)),
        ("I see a pin hole and a mouse bite near the bottom right.", True, ("pin_hole", "mousebite")),
        ("I cannot tell from this image.", None, ()),
    ],
)
def test_plain_free_text(text, verdict, types):
    a = parse_plain(text, W, H)
    assert a.error is None and a.defective is verdict and a.types == types


def test_plain_place_words_give_cells_and_gibberish_is_error():
    a = parse_plain("Defective: blowhole in the upper-left corner", W, H)
    assert a.extra["cells"] == [1] and a.boxes[0].from_cell
    assert parse_plain("The image shows a grey rectangle.", W, H).error is not None
    assert parse_plain("", W, H).error == "empty reply"


def test_extract_json_ignores_braces_inside_strings():
    assert extract_json('note {"defective": "yes", "why": "a } brace"} trailing') == {"defective": "yes", "why": "a } brace"}


def test_prompts_distinct_and_keys_change_with_wording():
    texts = {v: prompt_text(v) for v in VARIANTS}
    assert "uncertain" in texts["uncertain"] and '"uncertain"' not in texts["structured"]
    assert "JSON" not in texts["plain"]
    assert len({prompt_key(v) for v in VARIANTS}) == 3 and prompt_key("plain").startswith("plain@")
    with pytest.raises(ValueError):
        prompt_text("chatty")
