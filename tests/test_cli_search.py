"""`mmrag search` as a user runs it on the shipped example catalog: batch queries, weights, filters, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import EXAMPLE_CATALOG
from conftest import run_mmrag as mmrag

pytestmark = pytest.mark.slow


def _rows() -> dict[str, dict]:
    rows = [json.loads(line) for line in (EXAMPLE_CATALOG / "metadata.jsonl").read_text().splitlines() if line.strip()]
    return {Path(r["file"]).name: r for r in rows}


def test_batch_queries_print_one_object_per_line_and_go_on_after_a_bad_line(example_index, tmp_path) -> None:
    rows = _rows()
    image = EXAMPLE_CATALOG / "images" / "coco_000000119828.jpg"
    queries = tmp_path / "q.jsonl"
    queries.write_text("\n".join([
        json.dumps({"query": "an elephant", "k": 3}),
        "{not json",
        json.dumps({"image": str(image), "k": 4, "mode": "caption"}),
        json.dumps({"query": "a red stop sign", "mode": "bm25", "filters": {"coco_split": "val2017"}}),
        json.dumps({"query": "anything", "weights": "caption=abc"}),
    ]) + "\n")
    out = mmrag("search", "--queries", str(queries), "--data-dir", str(example_index))
    assert out.returncode == 2  # some lines failed; every line still answered
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["line"] for line in lines] == [1, 2, 3, 4, 5]
    assert len(lines[0]["results"]) == 3
    assert all("elephant" in rows[Path(r["path"]).name]["categories"] for r in lines[0]["results"])
    assert "invalid JSON" in lines[1]["error"]
    assert len(lines[2]["results"]) == 4 and all(Path(r["path"]).name != image.name for r in lines[2]["results"])
    assert lines[3]["results"] and all(rows[Path(r["path"]).name]["coco_split"] == "val2017" for r in lines[3]["results"])
    assert "not a number" in lines[4]["error"]


@pytest.mark.parametrize("weights,message", [("caption=nan", "finite"), ("bm25=inf", "finite"),
                                             ("caption=-1,bm25=-1", ">= 0"), ("clip=abc", "not a number"),
                                             ("caption=0,bm25=0,ocr=0", "weight 0"), ("colour=1", "unknown channel")])
def test_bad_weights_are_one_line(example_index, weights: str, message: str) -> None:
    out = mmrag("search", "dog", "--weights", weights, "--data-dir", str(example_index))
    assert out.returncode == 2 and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("value", ['C:\\dir', "trailing\\", "val2017\nx", "日本", 'x" or coco_split != "'])
def test_odd_filter_values_match_literally_or_nothing_never_crash(example_index, value: str) -> None:
    for fusion in ("client", "native"):
        out = mmrag("search", "dog", "--filter", f"coco_split={value}", "--fusion", fusion, "--json",
                    "--data-dir", str(example_index))
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["results"] == []  # no row holds these values


def test_typed_filter_refusals_are_one_line(example_index) -> None:
    for flt, message in [("coco_image_id=abc", "holds int"), ("categories_known=maybe", "true/false"),
                         ("coco_image_id=nan", "holds int"), ("nope=1", "unknown filter field")]:
        out = mmrag("search", "dog", "--filter", flt, "--data-dir", str(example_index))
        assert out.returncode == 2 and message in out.stderr, (flt, out.stderr)
    ok = mmrag("search", "dog", "--filter", "categories_known=true", "--json", "--data-dir", str(example_index))
    assert ok.returncode == 0 and json.loads(ok.stdout)["results"]


SEARCH_SCRIPT = """
import json, sys
from pathlib import Path
from rag.config import Settings
from rag.search import SearchEngine, limit_query_threads

settings = Settings.from_env().with_(data_dir=Path(sys.argv[1]))
with SearchEngine.open(settings, models_from_index=True) as engine:
    limit_query_threads(settings.query_threads)
    response = engine.search("an elephant", k=3)
print(json.dumps({"paths": [r.path for r in response.results], "backend": engine.text_embedder.backend,
                  "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


def test_caption_side_search_imports_neither_torch_nor_transformers(example_index) -> None:
    import os
    import subprocess
    import sys

    from conftest import REPO

    assert list((example_index / "models").glob("*.onnx")), "indexing exports the caption model to ONNX"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMRAG_DATA_DIR": "", "MMRAG_URI": "", "MMRAG_CLIP_MODEL": ""}
    out = subprocess.run([sys.executable, "-c", SEARCH_SCRIPT, str(example_index)], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    rows = _rows()
    assert len(report["paths"]) == 3 and all("elephant" in rows[Path(p).name]["categories"] for p in report["paths"])
    assert report["backend"] == "onnx" and report["torch"] is False and report["transformers"] is False
