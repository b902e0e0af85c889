"""`mmrag inspect`: one clear line for a missing/unreachable endpoint, JSON output, --eval without a VLM."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fake_vlm_server import FakeVLMServer
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env_extra: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMRAG_VLM", "OPENAI_"))}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "mmrag.cli", "inspect", *args], capture_output=True, text=True, env=env, cwd=cwd or REPO, timeout=120
    )


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "tile.png"
    Image.new("RGB", (80, 60), (150, 150, 150)).save(path)
    return path


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_not_configured_is_one_line(image, tmp_path):
    line = _one_line_error(run_cli(str(image), "--data-dir", str(tmp_path / "d")))
    assert line.startswith("mmrag: error: VLM not configured") and "MMRAG_VLM_BASE_URL" in line and "MMRAG_VLM_MODEL" in line


def test_unreachable_endpoint_is_one_line(image, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MMRAG_VLM_BASE_URL": f"http://127.0.0.1:{port}/v1", "MMRAG_VLM_MODEL": "llava"}
    line = _one_line_error(run_cli(str(image), "--data-dir", str(tmp_path / "d"), env_extra=env))
    assert line == f"mmrag: error: VLM endpoint http://127.0.0.1:{port}/v1 unreachable: connection refused"


def test_missing_image_is_one_line(tmp_path):
    line = _one_line_error(run_cli(str(tmp_path / "nope.png"), "--baseline"))
    assert "no such image or folder" in line


def test_json_answers_from_scripted_endpoint_and_model_override(image, tmp_path):
    reply = '{"defective": "uncertain", "confidence": 0.4}'
    with FakeVLMServer(default=reply) as srv:
        env = {"MMRAG_VLM_BASE_URL": srv.base_url, "MMRAG_VLM_MODEL": "from-env"}
        proc = run_cli(str(image.parent), "--prompt", "uncertain", "--vlm-model", "from-flag", "--json",
                       "--data-dir", str(tmp_path / "d"), env_extra=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == [str(image)] and out[str(image)]["verdict"] == "uncertain"
    assert [r.model for r in srv.chat_requests] == ["from-flag"]
    assert (tmp_path / "d" / "vlm_cache.sqlite").is_file()


def test_baseline_on_an_image_needs_no_endpoint(tmp_path):
    img = Image.new("L", (120, 120), 128)
    img.paste(20, (50, 50, 70, 70))  # a dark pit
    path = tmp_path / "pit.png"
    img.save(path)
    proc = run_cli(str(path), "--baseline", "--json")
    assert proc.returncode == 0, proc.stderr
    ans = json.loads(proc.stdout)[str(path)]
    assert ans["verdict"] == "defective" and ans["extra"]["method"] == "tile-stats"
    x0, y0, x1, y1 = ans["boxes"][0]["bbox_xyxy"]
    assert x0 <= 50 and y0 <= 50 and x1 >= 70 and y1 >= 70


def test_eval_without_vlm_writes_report_with_not_run_rows(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (50, 40), (120, 120, 120)).save(tmp_path / "images" / "a.png")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"data_root": str(tmp_path), "images": [
        {"file": "images/a.png", "source": "s", "is_defective": False, "defect_types": [], "boxes": [], "size": [50, 40]}]}))
    proc = run_cli("--eval", "--labels", str(labels), "--out", str(tmp_path / "rep"), "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 0, proc.stderr
    assert "structured/none: not run: no VLM endpoint configured" in proc.stdout
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["baseline"]["all"]["tn"] == 1 and report["vlm"]["runs"] == {}


def test_eval_with_bad_labels_is_one_line(tmp_path):
    bad = tmp_path / "labels.json"
    bad.write_text("{not json")
    line = _one_line_error(run_cli("--eval", "--labels", str(bad), "--out", str(tmp_path / "o")))
    assert "not valid JSON" in line
