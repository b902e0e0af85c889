"""End to end: scripted VLM answers (right, wrong, uncertain, malformed, slow, 429) -> run_eval -> exact rates.

The scripted server proves the plumbing only; these numbers are never written to eval/reports/.
"""

from __future__ import annotations

import io
import json
import socket
from collections import Counter
from pathlib import Path

import pytest
from fake_vlm_server import FakeVLMServer, Reply
from PIL import Image

from rag.inspection.report import FILL_COMMAND, run_eval
from rag.config import Settings
from rag.inspection.runner import InspectConfig
from rag.vlm_client import VLMClient

W, H = 64, 48
BOX = (40, 30, 50, 40)
FRAC = [BOX[0] / W, BOX[1] / H, BOX[2] / W, BOX[3] / H]
# name -> (gold types, scripted behaviour)
CASES = {
    "d1": (["blowhole"], "right"),
    "d2": (["crack"], "wrong"),
    "d3": (["crack"], "uncertain"),
    "d4": (["blowhole"], "malformed"),
    "d5": (["crack"], "slow-then-right"),
    "f1": ([], "right"),
    "f2": ([], "wrong"),
    "f3": ([], "429-then-right"),
    "f4": ([], "fenced"),
}


def _make_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    rows = []
    for i, (name, (types, _)) in enumerate(CASES.items()):
        img = Image.new("RGB", (W, H), (100 + 10 * i,) * 3)
        if types:
            img.paste((0, 0, 0), BOX)
        img.save(root / "images" / f"{name}.png")
        rows.append({
            "file": f"images/{name}.png", "source": "synthetic", "is_defective": bool(types), "defect_types": types,
            "boxes": [{"label": types[0], "bbox_xyxy": list(BOX)}] if types else [], "size": [W, H], "note": name,
        })  # fmt: skip
    labels = root / "labels.json"
    labels.write_text(json.dumps({"data_root": str(root), "images": rows}))
    return labels


def _responder(calls: Counter):
    names = list(CASES)

    def respond(req):
        img = Image.open(io.BytesIO(req.images[0])).convert("L")
        name = names[(img.getpixel((0, 0)) - 100) // 10]
        calls[name] += 1
        types, how = CASES[name]
        defective = bool(types)
        yes = {"defective": "yes", "defect_types": types, "boxes": [FRAC], "confidence": 0.9}
        no = {"defective": "no", "defect_types": [], "boxes": [], "confidence": 0.7}
        if how == "right":
            return json.dumps(yes if defective else no)
        if how == "wrong":
            return json.dumps({"defective": "no", "confidence": 0.95} if defective else
                              {"defective": "yes", "defect_types": ["crack"], "boxes": [[0, 0, 0.2, 0.2]], "confidence": 0.85})
        if how == "uncertain":
            return json.dumps({"defective": "uncertain", "confidence": 0.3})
        if how == "malformed":
            return "Looks defective to me!!"
        if how == "slow-then-right":
            body = json.dumps({"defective": "yes", "defect_types": types, "confidence": 0.6})
            return Reply(text=body, delay_s=1.2) if calls[name] == 1 else body
        if how == "429-then-right":
            return Reply(status=429) if calls[name] == 1 else json.dumps({**no, "confidence": 0.8})
        if how == "fenced":
            return '```json\n{"defective": "no", "confidence": 0.9,}\n```'
        raise AssertionError(how)

    return respond


@pytest.fixture()
def dataset(tmp_path):
    return _make_dataset(tmp_path / "data")


def test_scripted_vlm_run_gives_the_exact_rates(dataset, tmp_path):
    calls: Counter = Counter()
    settings = Settings(data_dir=tmp_path / "state")
    cfg = InspectConfig("uncertain", "none")
    with FakeVLMServer(_responder(calls)) as srv:
        client = VLMClient(srv.base_url, "scripted", timeout_s=0.5, max_retries=2, backoff_s=0.01)
        payload = run_eval(dataset, tmp_path / "report", settings, (cfg,), progress=False, client=client)
        s = payload["vlm"]["runs"]["uncertain/none"]["summary"]
        assert (s["tp"], s["fp"], s["fn"], s["tn"], s["abstain"], s["error"]) == (2, 1, 1, 3, 1, 1)
        assert s["miss_rate"] == pytest.approx(1 / 3)
        assert s["false_alarm_rate"] == pytest.approx(1 / 4)
        assert s["accuracy"] == pytest.approx(5 / 7)
        assert s["catch_rate"] == pytest.approx(2 / 4)
        assert s["abstention_rate"] == pytest.approx(1 / 8)
        assert s["error_rate"] == pytest.approx(1 / 9)
        assert s["type_accuracy"] == 1.0
        assert (s["loc_given"], s["loc_hit_rate"], s["grounded_detection_rate"]) == (1, 1.0, pytest.approx(1 / 3))
        assert s["confident_wrong"] == 2
        assert calls == Counter({"d5": 2, "f3": 2, **{n: 1 for n in CASES if n not in ("d5", "f3")}})
        answers = payload["answers"]["uncertain/none"]
        assert answers["images/d4.png"]["verdict"] == "error" and "no parseable JSON" in answers["images/d4.png"]["error"]
        assert answers["images/d1.png"]["boxes"][0]["bbox_xyxy"] == list(BOX)

        # second run: everything usable comes from the cache; only the malformed reply is asked again
        before = len(srv.chat_requests)
        again = run_eval(dataset, tmp_path / "report", settings, (cfg,), progress=False, client=client)
        assert len(srv.chat_requests) - before == 1
        assert again["vlm"]["runs"]["uncertain/none"]["summary"] == s

    md = (tmp_path / "report" / "report.md").read_text()
    assert "| uncertain/none | measured |" in md
    row = next(r for r in payload["comparison"] if r["run"] == "uncertain/none")
    assert row["status"] == "measured" and row["miss_rate"] == pytest.approx(1 / 3)
    # every failure (FN d2, abstain d3, error d4, FP f2) has an overlay PNG
    fails = payload["overlays"]["uncertain/none"]
    assert sorted(fails) == ["images/d2.png", "images/d3.png", "images/d4.png", "images/f2.png"]
    for rel in fails.values():
        assert Image.open(tmp_path / "report" / rel).format == "PNG"


def test_forced_vs_uncertain_and_crop_runs_side_by_side(dataset, tmp_path):
    calls: Counter = Counter()
    configs = (InspectConfig("structured", "none"), InspectConfig("structured", "2x2"))
    with FakeVLMServer(_responder(calls)) as srv:
        client = VLMClient(srv.base_url, "scripted", timeout_s=0.5, max_retries=2, backoff_s=0.01)
        payload = run_eval(dataset, tmp_path / "r", Settings(data_dir=tmp_path / "s"), configs, progress=False, client=client)
    runs = payload["vlm"]["runs"]
    assert set(runs) == {"structured/none", "structured/2x2"}
    # 9 whole images + 9 x 4 tiles (+ retries of the slow and the 429 tiles)
    assert sum(calls.values()) == len(srv.chat_requests) >= 9 + 36
    names = [r["run"] for r in payload["comparison"]]
    assert names == ["pixel-baseline", "structured/none", "structured/2x2"]


def test_no_vlm_configured_still_measures_baseline_and_says_not_run(dataset, tmp_path):
    payload = run_eval(dataset, tmp_path / "r", Settings(data_dir=tmp_path / "s"), progress=False)
    assert payload["vlm"]["runs"] == {} and payload["vlm"]["error"] is None
    assert all(r["status"] == "not run" for r in payload["comparison"][1:])
    assert payload["baseline"]["all"]["n"] == 9
    md = (tmp_path / "r" / "report.md").read_text()
    assert "**Not run**" in md and FILL_COMMAND in md
    assert "| structured/3x3 | not run |" in md and "| uncertain/none | not run |" in md
    assert (tmp_path / "r" / "detection_by_type.png").is_file()


def test_endpoint_down_keeps_baseline_report_and_names_the_problem(dataset, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = VLMClient(f"http://127.0.0.1:{port}/v1", "m", max_retries=0)
    payload = run_eval(dataset, tmp_path / "r", Settings(data_dir=tmp_path / "s"), progress=False, client=client)
    assert "unreachable: connection refused" in payload["vlm"]["error"]
    assert all(r["status"] == "not run" for r in payload["comparison"][1:])
    assert all("unreachable" in why for why in payload["vlm"]["not_run"].values())
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: VLM endpoint")
    assert (tmp_path / "r" / "report.md").is_file()
