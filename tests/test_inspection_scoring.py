"""Every inspection metric on a hand-built case whose exact values are known."""

from __future__ import annotations

import pytest

from rag.inspection.scoring import compare, score_all, score_image, slices, summarize
from rag.inspection.answer_parser import Answer, error_answer
from rag.inspection.boxes import Box, GoldBox, cell_box, hits
from rag.inspection.labels import ImageLabel


def lab(file, source, boxes=(), size=(100, 100)):
    gold = [GoldBox(t, xyxy) for t, xyxy in boxes]
    return ImageLabel(file, source, bool(gold), sorted({g.label for g in gold}), gold, size)


LABELS = {
    "a": lab("a", "pcb", [("open", (10, 10, 20, 20)), ("spur", (60, 60, 80, 80))]),  # largest box 4%: "larger"
    "b": lab("b", "pcb", [("short", (0, 0, 5, 5))]),  # tiny (0.25%)
    "c": lab("c", "tile", [("crack", (0, 0, 50, 100))]),  # larger (50%)
    "d": lab("d", "tile", [("crack", (40, 40, 60, 60))]),  # larger (4%)
    "e": lab("e", "tile", [("uneven", (0, 0, 100, 30))]),
    "f": lab("f", "tile"),
    "g": lab("g", "tile"),
    "h": lab("h", "pcb"),
    "i": lab("i", "pcb"),
}
ANSWERS = {
    # TP, right types, first gold box hit by IoU, second missed; one stray box
    "a": Answer(True, ("open",), (Box((11, 11, 21, 21), "open"), Box((90, 0, 99, 9), "spur")), 0.9),
    # TP but wrong type and wrong place
    "b": Answer(True, ("spur",), (Box((50, 50, 60, 60), "spur"),), 0.95),
    # FN, confident
    "c": Answer(False, confidence=0.85),
    # TP via a 3x3 grid cell overlapping the gold box, no confidence
    "d": Answer(True, ("crack",), (Box(cell_box(5, 100, 100), "crack", from_cell=True),)),
    # abstained
    "e": Answer(None, confidence=0.2),
    # TN
    "f": Answer(False, confidence=0.6),
    # FP, confident -> hallucination
    "g": Answer(True, ("crack",), (Box((1, 1, 5, 5), "crack"),), 0.8),
    # error: never a verdict
    "h": error_answer("malformed reply"),
    # TN, no confidence
    "i": Answer(False),
}


def test_hit_rules():
    gold = (10, 10, 20, 20)
    assert hits(Box((11, 11, 21, 21)), gold)  # IoU 0.68
    assert hits(Box((0, 0, 30, 30)), gold)  # IoU 0.11 >= 0.1
    assert hits(Box((14, 14, 16, 16)), gold)  # centre inside, IoU 0.04
    assert not hits(Box((18, 18, 60, 60)), gold)  # IoU < 0.1, centre outside
    assert hits(Box((19, 19, 60, 60), from_cell=True), gold)  # a cell only needs to overlap
    assert not hits(Box((20, 20, 60, 60), from_cell=True), gold)  # touching edges is not overlap


def test_per_image_statuses():
    out = {o.file: o for o in score_all(LABELS, ANSWERS)}
    assert {f: o.status for f, o in out.items()} == {
        "a": "TP", "b": "TP", "c": "FN", "d": "TP", "e": "abstain", "f": "TN", "g": "FP", "h": "error", "i": "TN",
    }  # fmt: skip
    assert [g.hit for g in out["a"].gold_boxes] == [True, False]
    assert out["a"].n_pred_on_gold == 1 and out["a"].n_pred_boxes == 2
    assert out["b"].type_hit is False and out["b"].localised is False
    assert out["d"].localised is True and out["d"].type_hit is True
    assert out["c"].confident_wrong and out["g"].confident_wrong and not out["b"].confident_wrong
    assert out["b"].failed and out["c"].failed and out["h"].failed and not out["a"].failed and not out["f"].failed
    assert score_image(LABELS["i"], Answer(None, error="x")).status == "error"


def test_summary_exact_rates():
    s = summarize(score_all(LABELS, ANSWERS))
    assert (s["tp"], s["fp"], s["fn"], s["tn"], s["abstain"], s["error"]) == (3, 1, 1, 2, 1, 1)
    assert s["answered"] == 7
    assert s["miss_rate"] == pytest.approx(1 / 4)
    assert s["false_alarm_rate"] == pytest.approx(1 / 3)
    assert s["accuracy"] == pytest.approx(5 / 7)
    assert s["catch_rate"] == pytest.approx(3 / 5)  # a, b, d caught out of a, b, c, d, e
    assert s["abstention_rate"] == pytest.approx(1 / 8)
    assert s["error_rate"] == pytest.approx(1 / 9)
    assert s["type_accuracy"] == pytest.approx(2 / 3)
    assert s["loc_given"] == 3 and s["loc_hit_rate"] == pytest.approx(2 / 3)
    assert s["grounded_detection_rate"] == pytest.approx(2 / 4)
    # gold boxes of answered defective images: a(2) b(1) c(1) d(1) = 5; hit: a's first, d's
    assert s["gold_boxes"] == 5 and s["box_recall"] == pytest.approx(2 / 5)
    assert s["box_type_accuracy"] == pytest.approx(2 / 2)
    # predicted boxes on answered images: a 2, b 1, d 1, g 1 = 5; on a gold box: a 1, d 1
    assert s["pred_boxes"] == 5 and s["box_precision"] == pytest.approx(2 / 5)
    assert s["confident_wrong"] == 2


def test_slices_by_source_type_and_size():
    sl = slices(score_all(LABELS, ANSWERS))
    assert sl["source"]["pcb"]["n"] == 4 and sl["source"]["pcb"]["miss_rate"] == 0.0
    assert sl["source"]["pcb"]["false_alarm_rate"] == 0.0  # h errored, i TN
    assert sl["source"]["tile"]["false_alarm_rate"] == pytest.approx(1 / 2)
    crack = sl["defect_type"]["crack"]
    assert crack["n"] == 2 and crack["miss_rate"] == pytest.approx(1 / 2) and crack["box_recall"] == pytest.approx(1 / 2)
    assert sl["defect_type"]["spur"]["box_recall"] == 0.0 and sl["defect_type"]["open"]["box_recall"] == 1.0
    assert sl["defect_type"]["none (defect-free)"]["false_alarm_rate"] == pytest.approx(1 / 3)
    assert LABELS["a"].size_bucket == "larger" and LABELS["b"].size_bucket == "tiny"
    assert sl["size"]["tiny"]["n"] == 1 and sl["size"]["tiny"]["miss_rate"] == 0.0
    assert sl["size"]["larger"]["miss_rate"] == pytest.approx(1 / 3)  # a TP, c FN, d TP (e abstained)
    assert sl["box_recall_by_box_size"] == {"tiny": pytest.approx(0.0), "larger": pytest.approx(2 / 4)}


def test_missing_answer_is_an_error_and_empty_rates_are_none():
    s = summarize(score_all({"f": LABELS["f"]}, {}))
    assert s["error"] == 1 and s["miss_rate"] is None and s["false_alarm_rate"] is None and s["accuracy"] is None


def test_compare_keeps_not_run_rows():
    rows = compare({"base": summarize(score_all(LABELS, ANSWERS)), "vlm": None})
    assert rows[0]["status"] == "measured" and rows[0]["miss_rate"] == pytest.approx(0.25)
    assert rows[1] == {"run": "vlm", "status": "not run"}
