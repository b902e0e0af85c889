"""Pixel baseline on synthetic PCB pairs and tiles (exact places and kinds), plus checks on the real set when present."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rag.errors import MmragError
from rag.inspection import pixel_baseline as pb
from rag.inspection.boxes import hits
from rag.inspection.labels import DEFAULT_LABELS, inspection_data_dir

REPO = Path(__file__).resolve().parents[1]
DATA = inspection_data_dir()
needs_data = pytest.mark.skipif(not (DATA / "ground_truth.jsonl").is_file(), reason=f"shared inspection data not found at {DATA}")


def _board() -> np.ndarray:
    """White board, black copper: two parallel traces, one pad with a drill hole."""
    img = np.full((200, 200), 255, np.uint8)
    cv2.rectangle(img, (20, 40), (180, 52), 0, -1)  # trace A
    cv2.rectangle(img, (20, 70), (180, 82), 0, -1)  # trace B
    cv2.circle(img, (100, 150), 25, 0, -1)  # pad
    cv2.circle(img, (100, 150), 8, 255, -1)  # its drill hole
    return img


def _defective(template: np.ndarray) -> tuple[np.ndarray, dict[str, tuple[int, int, int, int]]]:
    img = np.roll(template, (1, 1), axis=(0, 1)).copy()  # 1 px misregistration, as in real scans
    truth = {}
    cv2.rectangle(img, (60, 54), (66, 68), 0, -1)  # copper bridge between the traces
    truth["short"] = (56, 50, 70, 72)
    cv2.rectangle(img, (140, 40), (146, 54), 255, -1)  # cut through trace A
    truth["open"] = (136, 36, 150, 58)
    cv2.circle(img, (40, 120), 5, 0, -1)  # stray blob in the gap
    truth["spurious_copper"] = (32, 112, 48, 128)
    cv2.circle(img, (112, 162), 3, 255, -1)  # hole in the pad copper
    truth["pin_hole"] = (105, 155, 119, 169)
    cv2.rectangle(img, (150, 83), (156, 92), 0, -1)  # spur off trace B
    truth["spur"] = (146, 80, 160, 96)
    return img, truth


def test_template_diff_finds_each_defect_with_its_kind_and_nothing_else():
    template = _board()
    test, truth = _defective(template)
    res = pb.detect_pcb_with_template(test, template)
    assert res.method == "template-diff" and res.defective
    assert len(res.boxes) == len(truth), [b.to_dict() for b in res.boxes]
    for kind, gold in truth.items():
        on_it = [b for b in res.boxes if hits(b, gold)]
        assert on_it, f"{kind} not found"
        assert on_it[0].label == kind
    assert abs(res.details["shift_px"][0] - 1) < 0.3 and abs(res.details["shift_px"][1] - 1) < 0.3


def test_template_diff_clean_pair_and_size_mismatch():
    template = _board()
    assert pb.detect_pcb_with_template(np.roll(template, (1, 0), axis=(0, 1)), template).boxes == []
    with pytest.raises(MmragError, match="differs from image size"):
        pb.detect_pcb_with_template(template[:100], template)


def test_drc_without_template_flags_small_islands_and_holes():
    clean = _board()
    assert pb.looks_binarised(clean)
    assert pb.detect_pcb_drc(clean).boxes == []  # drill hole (~200 px) is above the 175 px limit
    dirty = clean.copy()
    cv2.circle(dirty, (40, 120), 4, 0, -1)
    res = pb.detect_pcb_drc(dirty)
    assert [b.label for b in res.boxes] == ["spurious_copper"] and hits(res.boxes[0], (34, 114, 46, 126))


def _tile(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = 240, 200
    streaks = rng.normal(0, 12, size=(1, w))  # vertical grinding streaks
    light = np.linspace(90, 150, w)[None, :] + np.linspace(0, 20, h)[:, None]  # uneven illumination
    img = light + streaks + rng.normal(0, 3, size=(h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_tile_stats_finds_a_dark_pit_and_names_shapes():
    clean = _tile()
    assert not pb.looks_binarised(clean)
    assert pb.detect_tile(clean).boxes == []
    pit = clean.copy()
    cv2.circle(pit, (120, 100), 7, 40, -1)
    (box,) = pb.detect_tile(pit).boxes
    assert hits(box, (113, 93, 128, 108)) and box.label == "blowhole"
    crack = clean.copy()
    cv2.line(crack, (60, 60), (64, 180), 40, 3)
    (cbox,) = pb.detect_tile(crack).boxes
    assert cbox.label == "crack" and cbox.height > 100


def test_analyse_dispatches_and_reports_unreadable(tmp_path):
    cv2.imwrite(str(tmp_path / "t.png"), _board())
    test, _ = _defective(_board())
    cv2.imwrite(str(tmp_path / "x.png"), test)
    cv2.imwrite(str(tmp_path / "tile.png"), _tile())
    assert pb.analyse(tmp_path / "x.png", tmp_path / "t.png").method == "template-diff"
    assert pb.analyse(tmp_path / "x.png").method == "pcb-drc"
    assert pb.analyse(tmp_path / "tile.png").method == "tile-stats"
    assert len(pb.detect(tmp_path / "x.png", tmp_path / "t.png")) == 5
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(MmragError, match="cannot read image"):
        pb.detect(tmp_path / "bad.png")


@needs_data
def test_thresholds_come_from_the_tune_split():
    """The tuning script, which reads tune-split images only, must re-derive the module's constants."""
    out = subprocess.run([sys.executable, "scripts/tune_pixel_baseline.py"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    chosen = [line for line in out.stdout.splitlines() if "module has" in line]
    assert len(chosen) == 3
    assert f"PCB_TOL={pb.PCB_TOL} PCB_OPEN={pb.PCB_OPEN} PCB_MIN_AREA={pb.PCB_MIN_AREA} " in chosen[0]
    assert f"PCB_DRC_MAX_AREA={pb.PCB_DRC_MAX_AREA};" in chosen[1]
    assert f"TILE_MIN_AREA={pb.TILE_MIN_AREA};" in chosen[2]


@needs_data
def test_real_pcb_pairs_are_grounded():
    """On the real aligned PCB pairs most gold boxes are found (a regression guard, not a tuned number)."""
    from rag.inspection.labels import load_labels

    labels = [lab for lab in load_labels(DEFAULT_LABELS).values() if lab.template_file]
    gold = hit = 0
    for lab in labels:
        boxes = pb.detect(DATA / lab.file, DATA / lab.template_file)
        gold += len(lab.boxes)
        hit += sum(any(hits(b, g.xyxy) for b in boxes) for g in lab.boxes)
    assert len(labels) == 30 and hit / gold > 0.75
