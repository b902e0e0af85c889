"""Fault cases from issue 10 on the inspection side: data_root, split rows, PCB template discovery, layering."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import INSPECTION
from rag.config import Settings
from rag.inspection import pixel_baseline as pb
from rag.inspection.labels import DEFAULT_LABELS, load_labels, resolve_data_root
from rag.inspection.report import run_eval

REPO = Path(__file__).resolve().parents[1]
PCB = "pcb_44000024"  # 10 labelled defects


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMRAG_VLM", "OPENAI_"))}
    return subprocess.run([sys.executable, "-m", "mmrag.cli", "inspect", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=180)


def _tiny_ground_truth(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True)
    rows = []
    for i, defective in enumerate((False, True)):
        Image.new("RGB", (40, 30), (120 + 20 * i,) * 3).save(folder / "images" / f"t{i}.png")
        rows.append({"file": f"images/t{i}.png", "source": "magnetic_tile", "is_defective": defective,
                     "defect_types": ["crack"] if defective else [], "size": [40, 30],
                     "boxes": [{"label": "crack", "bbox_xyxy": [5, 5, 15, 15]}] if defective else []})
    gt = folder / "ground_truth.jsonl"
    gt.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return gt


# ------------------------------------------------------------------------------------- 14. data_root
def test_labels_written_elsewhere_by_the_script_find_their_images_in_the_eval(tmp_path: Path) -> None:
    gt = _tiny_ground_truth(tmp_path / "data" / "inspection")
    out = tmp_path / "elsewhere" / "sub" / "labels.json"
    out.parent.mkdir(parents=True)
    done = subprocess.run([sys.executable, "scripts/build_inspection_labels.py", "--ground-truth", str(gt), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["data_root"] == "../../data/inspection"  # relative to the labels file
    assert resolve_data_root(out) == (tmp_path / "data" / "inspection").resolve()
    payload = run_eval(out, tmp_path / "report", Settings(data_dir=tmp_path / "d"), progress=False)
    assert payload["n_images"] == 2 and payload["baseline"]["all"]["n"] == 2


def test_shared_data_env_does_not_override_an_explicit_data_root(tmp_path: Path, monkeypatch, caplog) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (tmp_path / "other" / "inspection").mkdir(parents=True)
    monkeypatch.setenv("MMRAG_SHARED_DATA", str(tmp_path / "other"))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"data_root": "mine", "images": []}))
    assert resolve_data_root(labels) == mine.resolve()
    labels.write_text(json.dumps({"data_root": str(mine), "images": []}))
    assert resolve_data_root(labels) == mine
    labels.write_text(json.dumps({"data_root": "missing", "images": []}))  # only a missing folder falls back, loudly
    with caplog.at_level(logging.WARNING):
        assert resolve_data_root(labels) == (tmp_path / "other" / "inspection").resolve()
    assert "data_root" in caplog.text and "missing" in caplog.text


# ----------------------------------------------------------------------------------- 15. split rows
def test_report_prints_split_rows_only_for_the_labels_they_were_fitted_on(tmp_path: Path) -> None:
    gt = _tiny_ground_truth(tmp_path / "data")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"data_root": "data", "images": [json.loads(x) for x in gt.read_text().splitlines()]}))
    proc = run_cli("--eval", "--labels", str(labels), "--out", str(tmp_path / "rep"), "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 0, proc.stderr
    assert "pixel baseline (all, 2 images)" in proc.stdout and "test split" not in proc.stdout
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "| tune split |" not in report and "| test split (held out) |" not in report and "(test split)" not in report
    assert "no tune/test split is reported" in report
    payload = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert payload["baseline"]["test_split"] is None and payload["split_counts"] is None


def test_fitted_split_is_recognised_and_survives_limit(tmp_path: Path) -> None:
    labels = load_labels(DEFAULT_LABELS)
    fitted = pb.fitted_split(labels.values())
    assert fitted is not None and sum(v == "tune" for v in fitted.values()) == 39
    assert pb.fitted_split(list(labels.values())[:60]) is None  # a subset is another set
    if not (INSPECTION / "images").is_dir():
        pytest.skip("shared inspection images not found")
    payload = run_eval(DEFAULT_LABELS, tmp_path / "rep", Settings(data_dir=tmp_path / "d"), limit=4, progress=False)
    rows = payload["per_image"]["pixel-baseline"]
    assert [r["split"] for r in rows] == [fitted[r["file"]] for r in rows]  # not re-split on the 4 images


# -------------------------------------------------------------------------- 16. PCB template found
@pytest.fixture()
def pcb_pair(tmp_path: Path) -> tuple[Path, Path]:
    if not (INSPECTION / "images").is_dir():
        pytest.skip("shared inspection images not found")
    with Image.open(INSPECTION / "images" / f"{PCB}_test.jpg") as img:  # other bytes: not matched via the labels
        img.save(tmp_path / f"{PCB}_test.png")
    template = shutil.copy(INSPECTION / "references" / f"{PCB}_template.jpg", tmp_path / f"{PCB}_template.jpg")
    return tmp_path / f"{PCB}_test.png", Path(template)


def test_pcb_scan_without_template_flag_uses_the_template_beside_it_and_says_so(pcb_pair) -> None:
    test, template = pcb_pair
    proc = run_cli(str(test), "--baseline", "--json")
    assert proc.returncode == 0, proc.stderr
    extra = json.loads(proc.stdout)[str(test)]["extra"]
    assert extra["method"] == "template-diff" and extra["template"] == str(template)
    assert extra["template_from"] == "beside the image"
    line = run_cli(str(test), "--baseline").stdout
    assert f"[pixel baseline: template difference vs {template.name} (beside the image)]" in line


def test_pcb_scan_copied_elsewhere_uses_the_template_named_in_the_labels(tmp_path: Path, pcb_pair) -> None:
    lone = tmp_path / "lone" / "scan.jpg"
    lone.parent.mkdir()
    shutil.copy(INSPECTION / "images" / f"{PCB}_test.jpg", lone)  # same bytes as the labelled scan
    proc = run_cli(str(lone), "--baseline", "--json")
    assert proc.returncode == 0, proc.stderr
    extra = json.loads(proc.stdout)[str(lone)]["extra"]
    assert extra["method"] == "template-diff" and extra["template_from"] == "labels"
    assert Path(extra["template"]).name == f"{PCB}_template.jpg"


def test_pcb_scan_without_any_template_reports_the_design_rule_check(tmp_path: Path, pcb_pair) -> None:
    _, template = pcb_pair
    proc = run_cli(str(template), "--baseline")  # a template has no template of its own
    assert proc.returncode == 0, proc.stderr
    assert "[pixel baseline: design-rule check, no template found]" in proc.stdout


def test_found_template_of_another_size_falls_back_and_says_why(tmp_path: Path) -> None:
    Image.new("L", (64, 64), 255).save(tmp_path / "board_test.png")
    Image.new("L", (32, 32), 255).save(tmp_path / "board_template.png")
    proc = run_cli(str(tmp_path / "board_test.png"), "--baseline")
    assert proc.returncode == 0, proc.stderr
    assert "board_template.png (beside the image) not used: template size" in proc.stdout


# ------------------------------------------------------------------------------------ layering
def test_library_never_imports_eval_ingest_or_the_app_from_inspection_or_app_support() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+(ingest|eval|app_streamlit)\b", re.M)
    for path in [*(REPO / "rag" / "inspection").glob("*.py"), *(REPO / "rag" / "app").glob("*.py")]:
        assert not pattern.search(path.read_text()), path
