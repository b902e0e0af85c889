"""Index real sample images into Milvus Lite on disk and search them: random-weight ViT-B/32 + offline MiniLM.

Random CLIP weights exercise shapes, dimensions and code paths only; no quality is claimed from them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import copy_sample
from ingest.pipeline import index_folder
from rag.config import Settings
from rag.errors import MmragError
from rag.hashing import file_sha256
from rag.search import SearchEngine
from rag.store import CatalogStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip_index(tmp_path_factory, retrieval_data, retrieval_rows, clip_model, text_model):
    """24 sample images (plus one exact copy and a salted set of bad files), indexed with CLIP + captions."""
    root = tmp_path_factory.mktemp("clipcat")
    images = copy_sample(retrieval_rows, retrieval_data, root, 24, step=20)
    first = sorted(images.iterdir())[0]
    (images / "copy_of_first.jpg").write_bytes(first.read_bytes())
    with Image.open(first) as img:  # same picture, other bytes: a near-duplicate, not an exact copy
        img.resize((img.width // 2, img.height // 2)).save(images / "zz_smaller_first.jpg", quality=80)
    (images / "empty.jpg").write_bytes(b"")
    (images / "notes.txt").write_text("not an image")
    (images / "fake.png").write_text("plain text pretending to be a png")
    Image.new("RGB", (64, 64), "green").save(images / "truncated.jpg")
    (images / "truncated.jpg").write_bytes((images / "truncated.jpg").read_bytes()[:150])
    settings = Settings(data_dir=root / "data", clip_model="random-clip", batch_size=8)
    report = index_folder(images, settings, metadata=root / "metadata.jsonl", show_progress=False,
                          clip=clip_model, text_embedder=text_model)
    return settings, images, report


def _good_hashes(images: Path) -> set[str]:
    good = [p for p in images.iterdir() if p.suffix == ".jpg" and p.name not in ("empty.jpg", "truncated.jpg")]
    good = [p for p in good if p.name != "zz_smaller_first.jpg"] + [images / "zz_smaller_first.jpg"]
    return {file_sha256(p) for p in good}


def test_the_catalog_holds_every_good_image_once(clip_index) -> None:
    settings, images, report = clip_index
    expected = _good_hashes(images)
    assert len(expected) == 25 and report.indexed == 25 and report.total_in_store == 25
    with CatalogStore.open(settings) as store:
        assert store.ids() == expected
        assert store.count() == 25  # no duplicate rows behind the distinct ids
        assert [c.name for c in store.channels] == ["clip", "caption", "bm25", "ocr"]
        row = store.client.get(store.primary, ids=[sorted(expected)[0]], output_fields=["*"])[0]
        assert len(row["clip_vector"]) == 512 and len(row["caption_vector"]) == 384
        assert row["bm25_text"] and row["caption_pending"] is False


def test_bad_files_are_listed_and_copies_indexed_once(clip_index) -> None:
    _, images, report = clip_index
    bad = {Path(p).name: why for p, why in report.bad_files}
    assert set(bad) == {"empty.jpg", "notes.txt", "fake.png", "truncated.jpg"}
    assert bad["empty.jpg"] == "empty file" and "not an image file type" in bad["notes.txt"]
    assert "not a readable image" in bad["fake.png"] and "corrupt" in bad["truncated.jpg"]
    assert [Path(p).name for p, _ in report.duplicates] == ["copy_of_first.jpg"]


def test_near_duplicates_are_reported(clip_index) -> None:
    _, images, report = clip_index
    first = sorted(p for p in images.glob("coco_*.jpg"))[0]
    pair = {file_sha256(first), file_sha256(images / "zz_smaller_first.jpg")}
    assert any({a, b} == pair and cosine >= 0.95 for a, b, cosine in report.near_duplicates)


def test_rerun_indexes_nothing_new(clip_index, clip_model, text_model) -> None:
    settings, images, _ = clip_index
    again = index_folder(images, settings, show_progress=False, clip=clip_model, text_embedder=text_model)
    assert (again.indexed, again.already_indexed, again.total_in_store) == (0, 25, 25)


def test_text_image_and_hybrid_queries_report_per_retriever_ranks(clip_index, clip_model, text_model) -> None:
    settings, images, _ = clip_index
    with SearchEngine.open(settings, clip=clip_model, text_embedder=text_model) as engine:
        assert engine.available_modes == ["clip", "caption", "bm25", "ocr", "hybrid"]
        clip_only = engine.search("a dog on a beach", mode="clip", k=5)
        assert [r.rank for r in clip_only.results] == [1, 2, 3, 4, 5]
        assert all(r.ranks["clip"] == r.rank and r.ranks["caption"] is None for r in clip_only.results)
        hybrid = engine.search("people", mode="hybrid", k=10)
        assert len(hybrid.results) == 10
        scores = [r.score for r in hybrid.results]
        assert scores == sorted(scores, reverse=True)
        # Every hybrid hit was found by at least one retriever, and its rank there is reported.
        assert all(any(v is not None for v in r.ranks.values()) for r in hybrid.results)
        assert any(r.ranks["clip"] is not None for r in hybrid.results)
        assert set(hybrid.timings_ms) >= {"clip", "caption", "bm25", "total"}
        # The RRF score is the sum over the channels' ranks (equal weights, k=60, rank from 1 here).
        top = hybrid.results[0]
        expected = sum(1 / (59 + r) for r in top.ranks.values() if r is not None)
        assert top.score == pytest.approx(expected)


def test_image_query_drops_its_own_hit(clip_index, clip_model, text_model) -> None:
    settings, images, _ = clip_index
    query = sorted(images.glob("coco_*.jpg"))[3]
    own = file_sha256(query)
    with SearchEngine.open(settings, clip=clip_model, text_embedder=text_model) as engine:
        for mode in ("clip", "hybrid", "caption"):
            response = engine.search(image=query, mode=mode, k=30)
            assert own not in [r.id for r in response.results]
            assert len(response.results) == 24 if mode != "caption" else len(response.results) >= 1
        # The same image under another name is still "itself" (same content hash).
        copy = images / "copy_of_first.jpg"
        assert file_sha256(copy) not in [r.id for r in engine.search(image=copy, mode="clip", k=30).results]


def test_filters_restrict_every_mode(clip_index, clip_model, text_model, retrieval_rows) -> None:
    settings, images, _ = clip_index
    indexed = {p.name for p in images.glob("*.jpg")}
    split = {Path(r["file"]).name: r.get("coco_split") for r in retrieval_rows if Path(r["file"]).name in indexed}
    with SearchEngine.open(settings, clip=clip_model, text_embedder=text_model) as engine:
        for mode in ("clip", "caption", "bm25", "hybrid"):
            response = engine.search("a person", mode=mode, k=20, filters={"coco_split": "val2017"})
            assert response.results, mode
            assert all(split[Path(r.path).name] == "val2017" for r in response.results), mode
        with pytest.raises(MmragError, match="unknown filter field"):
            engine.search("x", filters={"nope": "1"})


def test_json_contract(clip_index, clip_model, text_model) -> None:
    settings, _, _ = clip_index
    with SearchEngine.open(settings, clip=clip_model, text_embedder=text_model) as engine:
        data = json.loads(json.dumps(engine.search("a street", k=3).to_dict()))
    assert set(data) == {"query", "mode", "results", "timings_ms", "fusion", "parts", "negations", "match", "match_evidence"}
    assert set(data["results"][0]) == {"id", "path", "score", "rank", "ranks", "caption", "scores", "matched_terms", "match"}
    assert data["parts"] == [{"text": "a street", "image": None, "weight": 1.0}] and data["negations"] == []
    assert set(data["results"][0]["ranks"]) == {"clip", "caption", "bm25", "ocr"}
