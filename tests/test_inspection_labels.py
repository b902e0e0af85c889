"""Gold labels: builder, human notes, loader errors, the tune/test split, and the committed file being current."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from rag.errors import MmragError
from rag.inspection.boxes import GoldBox
from rag.inspection.labels import (
    DEFAULT_LABELS,
    ImageLabel,
    baseline_split,
    build_labels,
    human_note,
    inspection_data_dir,
    load_labels,
    place_phrase,
    write_labels,
)

DATA = inspection_data_dir()
needs_data = pytest.mark.skipif(not (DATA / "ground_truth.jsonl").is_file(), reason=f"shared inspection data not found at {DATA}")


def test_place_phrases():
    assert place_phrase((0, 0, 10, 10), 300, 300) == "near the upper-left, touching the left and top edge"
    assert place_phrase((140, 140, 160, 160), 300, 300) == "in the centre"
    assert place_phrase((0, 0, 300, 60), 300, 300) == "across the full width at the top"
    assert place_phrase((250, 140, 260, 160), 300, 300) == "on the right"


def test_human_note_says_what_size_and_where():
    tile = ImageLabel("images/x.jpg", "magnetic_tile", True, ["blowhole"], [GoldBox("blowhole", (20, 20, 27, 29))], (300, 300))
    assert human_note(tile) == "Small dark pit (blowhole), 9 px, near the upper-left."
    pcb = ImageLabel("images/p.jpg", "deeppcb", True, ["pin_hole", "short"],
                     [GoldBox("pin_hole", (10, 10, 40, 40), {"defect_px": [2, 2]}), GoldBox("short", (200, 200, 230, 260))],
                     (512, 512))  # fmt: skip
    note = human_note(pcb)
    assert note.startswith("2 defects: ") and "2 px pin hole near the upper-left" in note and "short" in note
    free = ImageLabel("images/f.jpg", "deeppcb", False, [], [], (512, 512))
    assert human_note(free).startswith("No defect")


def test_size_bucket():
    mk = lambda box: ImageLabel("f", "s", True, ["x"], [GoldBox("x", box)], (100, 100))  # noqa: E731
    assert mk((0, 0, 9, 9)).size_bucket == "tiny"  # 0.81%
    assert mk((0, 0, 10, 10)).size_bucket == "larger"  # exactly 1%
    assert ImageLabel("f", "s", False, [], [], (10, 10)).size_bucket == "none"


def test_round_trip_and_loader_errors(tmp_path):
    gt = tmp_path / "ground_truth.jsonl"
    rows = [
        {"file": "images/a.jpg", "source": "magnetic_tile", "is_defective": True, "defect_types": ["crack"],
         "boxes": [{"label": "crack", "bbox_xyxy": [5, 0, 9, 80]}], "size": [100, 100], "note": "machine note"},
        {"file": "images/b.jpg", "source": "magnetic_tile", "is_defective": False, "defect_types": [], "boxes": [],
         "size": [100, 100], "note": "machine note"},
    ]  # fmt: skip
    gt.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    labels = build_labels(gt)
    assert [lab.note != "machine note" for lab in labels] == [True, True]
    assert labels[0].note == "Thin crack, 4x80 px, 3% of the image, on the left, touching the top edge."
    out = tmp_path / "labels.json"
    write_labels(labels, out, "data")
    loaded = load_labels(out)
    assert list(loaded) == ["images/a.jpg", "images/b.jpg"]
    assert loaded["images/a.jpg"].boxes[0].xyxy == (5, 0, 9, 80) and loaded["images/a.jpg"].size_bucket == "larger"
    with pytest.raises(MmragError, match="labels file not found"):
        load_labels(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(MmragError, match="not valid JSON"):
        load_labels(tmp_path / "bad.json")
    (tmp_path / "short.json").write_text(json.dumps({"images": [{"file": "x"}]}))
    with pytest.raises(MmragError, match="bad label entry 'x'"):
        load_labels(tmp_path / "short.json")
    with pytest.raises(MmragError, match="ground truth not found"):
        build_labels(tmp_path / "nope.jsonl")


def test_split_is_stratified_and_deterministic():
    labs = [ImageLabel(f"images/t{i}.jpg", "magnetic_tile", True, ["crack"], [], (10, 10)) for i in range(10)]
    labs += [ImageLabel(f"images/f{i}.jpg", "magnetic_tile", False, [], [], (10, 10)) for i in range(6)]
    split = baseline_split(labs)
    assert split == baseline_split(reversed(labs))
    assert Counter(v for f, v in split.items() if "/t" in f) == {"tune": 4, "test": 6}
    assert Counter(v for f, v in split.items() if "/f" in f) == {"tune": 2, "test": 4}


@needs_data
def test_committed_labels_match_a_fresh_build():
    """inspection_labels.json is exactly what scripts/build_inspection_labels.py would write now."""
    fresh = {lab.file: lab.to_dict() for lab in build_labels(DATA / "ground_truth.jsonl")}
    committed = json.loads(DEFAULT_LABELS.read_text())
    assert committed["count"] == len(fresh) == 105
    assert {r["file"]: r for r in committed["images"]} == fresh
    counts = Counter((r["source"], r["is_defective"]) for r in committed["images"])
    assert counts == {("magnetic_tile", True): 50, ("magnetic_tile", False): 15, ("deeppcb", True): 30, ("deeppcb", False): 10}
    assert all(r["note"] and "machine" not in r["note"] for r in committed["images"])
