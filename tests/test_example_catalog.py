"""examples/catalog, the 40 photos committed in the repo: license-clean, small, rebuilt byte for byte by its
script, and enough for a bare clone (no ../shared beside it) to run the demo's index and searches."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import EXAMPLE_CATALOG, REPO, read_rows, require_retrieval_data

LICENSE_URLS = {
    "Attribution License": "http://creativecommons.org/licenses/by/2.0/",
    "Attribution-ShareAlike License": "http://creativecommons.org/licenses/by-sa/2.0/",
    "No known copyright restrictions": "http://flickr.com/commons/usage/",
}


def _build_script():
    spec = importlib.util.spec_from_file_location("build_example_catalog", REPO / "scripts" / "build_example_catalog.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_catalog_is_license_clean_small_and_attributed() -> None:
    rows = read_rows(EXAMPLE_CATALOG)
    files = sorted(p.name for p in (EXAMPLE_CATALOG / "images").iterdir())
    assert len(rows) == 40 and sorted(Path(r["file"]).name for r in rows) == files
    attribution = (EXAMPLE_CATALOG / "ATTRIBUTION.md").read_text()
    total = 0
    for row in rows:
        assert LICENSE_URLS.get(row["license"]) == row["license_url"], row["file"]  # never NC or ND
        assert row["captions"] and row["categories"] and row["flickr_url"].startswith("http")
        image = EXAMPLE_CATALOG / row["file"]
        with Image.open(image) as img:
            assert img.format == "JPEG" and max(img.size) <= 320 and list(img.size) == row["size"]
            assert "exif" not in img.info and not img.getexif()
        total += image.stat().st_size
        line = next(line for line in attribution.splitlines() if f"`{row['file']}`" in line)
        assert row["flickr_page"] in line and row["flickr_url"] in line and row["license_url"] in line
    assert total < 1.5e6
    # the demo's searches have answers: at least three images for each, named in their captions
    for category in ("elephant", "cat", "laptop", "stop sign", "pizza", "bus", "dog"):
        assert sum(category in r["categories"] and category in " ".join(r["captions"]).lower() for r in rows) >= 3


def test_build_is_deterministic_and_matches_the_committed_catalog(tmp_path) -> None:
    source = require_retrieval_data()
    build = _build_script().build
    first, second = tmp_path / "a", tmp_path / "b"
    build(source, first, 40)
    build(source, second, 40)
    for name in ("metadata.jsonl", "ATTRIBUTION.md"):
        assert (first / name).read_bytes() == (second / name).read_bytes() == (EXAMPLE_CATALOG / name).read_bytes(), name
    names = sorted(p.name for p in (first / "images").iterdir())
    assert names == sorted(p.name for p in (EXAMPLE_CATALOG / "images").iterdir())
    for name in names:
        fresh = (first / "images" / name).read_bytes()
        assert fresh == (second / "images" / name).read_bytes(), name
        # equal to the committed bytes with the pinned Pillow; after a Pillow upgrade rerun the script
        assert fresh == (EXAMPLE_CATALOG / "images" / name).read_bytes(), f"{name}: rerun scripts/build_example_catalog.py"


def _json_documents(text: str) -> list[dict]:
    decoder, docs, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) != -1:
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
    return docs


@pytest.mark.slow
def test_bare_clone_runs_the_demo_on_the_example_catalog(tmp_path) -> None:
    """Clone the committed repo alone, run scripts/demo.sh with this environment's Python, read its JSON."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout of the repo to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, capture_output=True, timeout=120)
    assert not (tmp_path / "shared").exists()
    drop = ("MMRAG_URI", "MMRAG_CLIP_MODEL", "MMRAG_TEXT_MODEL", "MMRAG_COLLECTION_PREFIX", "MMRAG_FUSION_WEIGHTS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=str(clone), MMRAG_CMD=f"{sys.executable} -m mmrag.cli", MMRAG_DEMO_JSON="1",
               MMRAG_DATA_DIR=str(tmp_path / "data"), MMRAG_SHARED_DATA=str(tmp_path / "shared"), HF_HUB_OFFLINE="1")
    done = subprocess.run(["bash", "scripts/demo.sh"], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith("demo catalog: examples/catalog")
    report, elephant, cat_laptop, stop_sign, by_image = _json_documents(done.stdout)
    assert report["indexed"] == 40 and report["total_in_store"] == 40

    rows = {Path(r["file"]).name: r for r in read_rows(clone / "examples" / "catalog")}
    catalog_dir = (clone / "examples" / "catalog" / "images").resolve()

    def hits(response: dict) -> list[dict]:
        assert all(Path(r["path"]).resolve().parent == catalog_dir for r in response["results"])  # the clone's photos
        return [rows[Path(r["path"]).name] for r in response["results"]]

    assert all("elephant" in r["categories"] for r in hits(elephant)[:3])
    top = hits(cat_laptop)
    assert {"cat", "laptop"} <= set(top[0]["categories"]) and len(top) == 5
    signs = hits(stop_sign)
    assert len(signs) == 3 and all("stop sign" in r["categories"] and r["coco_split"] == "val2017" for r in signs)
    similar = hits(by_image)
    assert "coco_000000119828.jpg" not in [Path(r["file"]).name for r in similar]  # the query image itself
    assert all({"cat", "laptop"} & set(r["categories"]) for r in similar)
