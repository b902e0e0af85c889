"""Milvus-native hybrid search (one hybrid_search + RRFRanker) against the LlamaIndex fusion path.

Both paths run over the same synthetic catalog in embedded Milvus Lite, with small deterministic
bag-of-words "embedders" standing in for the models (this tests the search plumbing, not model quality).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from rag.catalog import CatalogRecord
from rag.config import Settings
from rag.errors import MmragError
from rag.hashing import file_sha256
from rag.milvus_hybrid import (
    NativeHybridIndex,
    bm25_text,
    filter_expr,
    native_hybrid_enabled,
    search_native,
)

VOCAB = (
    "red blue green yellow black white car truck bus bicycle dog cat horse bird street park beach kitchen "
    "table chair pizza cake man woman child boat train plane tree snow grass window"
).split()
QUERIES = ["red car", "dog on the beach", "white cats", "a man with a bicycle", "pizza kitchen table",
           "snow trees", "green bus street", "horse", "boats and planes", "black chair window"]


def _token_vector(token: str, dim: int) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(f"{dim}:{token}".encode())).standard_normal(dim)


def bag_of_words(text: str, dim: int) -> list[float]:
    tokens = [t for t in text.lower().split() if t]
    vector = sum((_token_vector(t, dim) for t in tokens), np.zeros(dim)) + 0.05 * _token_vector(text, dim)
    return (vector / np.linalg.norm(vector)).tolist()


class FakeTextEmbedder:
    model_name = "fake-bow-48"
    dim = 48

    def get_query_embedding(self, text: str) -> list[float]:
        return bag_of_words(text, self.dim)

    def get_text_embedding(self, text: str) -> list[float]:
        return bag_of_words(text, self.dim)


class FakeClip:
    dim = 24

    def __init__(self, image_vectors: dict[str, list[float]]) -> None:
        self.image_vectors = image_vectors

    def get_query_embedding(self, text: str) -> list[float]:
        return bag_of_words(text, self.dim)

    def get_image_embedding(self, path: str) -> list[float]:
        return self.image_vectors[file_sha256(path)]


def make_catalog(n: int, seed: int = 0, query_image: Path | None = None) -> list[CatalogRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        words = rng.choice(VOCAB, size=int(rng.integers(3, 9)))
        caption = " ".join(words) + (" and two dogs" if i % 7 == 0 else "")
        category = ["street", "animal", "food"][i % 3]
        records.append(CatalogRecord(id=f"{i:064x}", path=f"/photos/{i}.jpg", caption=caption,
                                     metadata={"category": category, "year": 2000 + i % 5}))
    if query_image is not None:  # one record is the query image itself (its id is its content hash)
        records[5] = CatalogRecord(id=file_sha256(query_image), path=str(query_image), caption=records[5].caption,
                                   metadata=records[5].metadata)
    return records


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The lead's two collections written through CatalogStore, mirrored into the native hybrid collection."""
    from rag.search import SearchEngine
    from rag.store import CatalogStore

    tmp = tmp_path_factory.mktemp("hybrid")
    query_image = tmp / "query.png"
    query_image.write_bytes(b"\x89PNG fake bytes: only the content hash matters here")
    records = make_catalog(240, query_image=query_image)
    text = FakeTextEmbedder()
    rng = np.random.default_rng(1)
    image_vectors = {}
    for r in records:
        v = rng.standard_normal(FakeClip.dim)
        image_vectors[r.id] = (v / np.linalg.norm(v)).tolist()
    clip = FakeClip(image_vectors)
    settings = Settings(data_dir=tmp, clip_model="fake", text_model=text.model_name)
    store = CatalogStore(settings, image_dim=clip.dim, text_dim=text.dim)
    store.upsert(records, [text.get_text_embedding(r.caption) for r in records], [image_vectors[r.id] for r in records])
    native = NativeHybridIndex.open(settings, text_dim=text.dim, clip_dim=clip.dim, client=store.client)
    written = native.sync_from_store(store, show_progress=False)
    engine = SearchEngine(settings, store, clip, text)
    yield engine, native, records, written, query_image
    engine.close()


def ids(response) -> list[str]:
    return [r.id for r in response.results]


def test_sync_mirrors_every_row_once(built):
    engine, native, records, written, _ = built
    assert written == len(records)
    assert native.ids() == {r.id for r in records}
    # Idempotent: a second sync finds nothing missing.
    from rag.store import CatalogStore  # noqa: F401

    assert native.sync_from_store(engine.store, show_progress=False) == 0


@pytest.mark.parametrize("query", QUERIES)
def test_three_way_native_matches_llamaindex_fusion(built, query):
    engine, native, *_ = built
    fused = engine.search(query, mode="hybrid", k=10)
    in_milvus = search_native(engine, query, k=10, index=native)
    assert ids(in_milvus) == ids(fused)
    # Same fused RRF scores (Milvus returns float32 scores).
    assert [r.score for r in in_milvus.results] == pytest.approx([r.score for r in fused.results], rel=1e-6)
    assert in_milvus.mode == "hybrid" and all(set(r.ranks.values()) == {None} for r in in_milvus.results)


def test_filters_and_dropped_retriever_match(built):
    engine, native, *_ = built
    for query in QUERIES[:4]:
        fused = engine.search(query, mode="hybrid", k=10, filters={"category": "animal"}, weights={"clip": 0})
        in_milvus = search_native(engine, query, k=10, filters={"category": "animal"}, weights={"clip": 0}, index=native)
        assert ids(in_milvus) == ids(fused)
        assert {r.metadata["category"] for r in in_milvus.results} == {"animal"}


def test_typed_filter_on_an_int_field(built):
    engine, native, records, *_ = built
    hits = search_native(engine, "dog", k=50, filters={"year": "2003"}, index=native)
    assert hits.results and all(r.metadata["year"] == 2003 for r in hits.results)
    assert ids(hits) == ids(engine.search("dog", mode="hybrid", k=50, filters={"year": "2003"}))


def test_image_query_drops_its_own_hit(built):
    engine, native, records, _, query_image = built
    own = file_sha256(query_image)
    fused = engine.search(image=query_image, mode="hybrid", k=10)
    in_milvus = search_native(engine, image=query_image, k=10, index=native)
    assert own not in ids(in_milvus)
    assert ids(in_milvus) == ids(fused)


def test_bm25_only_route_ranks_like_rank_bm25(built):
    """With the dense routes dropped, Milvus' BM25 Function ranks exactly like rag/bm25.py."""
    engine, native, *_ = built
    for query in QUERIES:
        expected = ids(engine.search(query, mode="bm25", k=10))
        got = [h.id for h in native.search(text=query, k=10, weights={"clip": 0, "caption": 0})]
        assert got == expected, query


def test_milvus_bm25_scores_equal_rank_bm25_scores(built):
    """Same tokens, k1=1.5, b=0.75, Lucene IDF: the BM25 Function scores equal rag/bm25.py's (Milvus Lite
    reports BM25 as a negated distance; a server reports it positive)."""
    engine, native, *_ = built
    for query in QUERIES[:5]:
        expected = {r.id: r.score for r in engine.search(query, mode="bm25", k=10).results}
        hits = native.client.search(native.name, data=[bm25_text(query)], anns_field="sparse", limit=10,
                                    output_fields=["id"], search_params={"metric_type": "BM25"})[0]
        got = {h["id"]: abs(h["distance"]) for h in hits}
        assert got.keys() == expected.keys()
        assert [got[i] for i in expected] == pytest.approx(list(expected.values()), rel=1e-5)


def test_unequal_weights_are_refused(built):
    engine, native, *_ = built
    with pytest.raises(MmragError, match="no per-retriever weights"):
        search_native(engine, "red car", k=5, weights={"clip": 0.5}, index=native)


def test_reopened_store_is_loaded_and_searchable(tmp_path):
    """A new process finds the collection released (Milvus Lite 3): open() loads it."""
    from pymilvus import MilvusClient

    path = str(tmp_path / "reopen.db")
    records = make_catalog(30)
    text = FakeTextEmbedder()
    settings = Settings(data_dir=tmp_path, uri=path, clip_model=None)
    index = NativeHybridIndex.open(settings, text_dim=text.dim, clip_dim=None, client=MilvusClient(path))
    index.upsert(records, [text.get_text_embedding(r.caption) for r in records])
    index.client.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(path)  # what a process exit does: the next open starts cold
    again = NativeHybridIndex.open(settings, text_dim=text.dim, clip_dim=None, client=MilvusClient(path))
    hits = again.search(text=records[3].caption, caption_vector=text.get_query_embedding(records[3].caption), k=3)
    assert hits and hits[0].id == records[3].id
    again.client.close()


def test_missing_collection_is_a_clear_error(tmp_path):
    from pymilvus import MilvusClient

    client = MilvusClient(str(tmp_path / "empty.db"))
    index = NativeHybridIndex(client, "nothing_hybrid", text_dim=8, clip_dim=None)
    with pytest.raises(MmragError, match="no native hybrid index"):
        index.search(text="x", k=3)
    client.close()


def test_filter_expr_quotes_values_and_rejects_odd_keys():
    assert filter_expr({"category": 'say "hi"', "year": 2003, "ok": True}, ["b", "a"]) == (
        'category == "say \\"hi\\"" and year == 2003 and ok == true and id not in ["a", "b"]'
    )
    assert filter_expr(None) == ""
    with pytest.raises(MmragError, match="cannot filter"):
        filter_expr({"year) or (1": 1})
    with pytest.raises(MmragError, match="cannot filter"):
        filter_expr({"id": "x"})


def test_bm25_text_uses_the_bm25_tokenizer():
    assert bm25_text("The Dogs and the Boxes!") == "dog box"
    assert bm25_text("") == ""


def test_flag():
    assert native_hybrid_enabled({"MMRAG_NATIVE_HYBRID": "1"})
    assert not native_hybrid_enabled({"MMRAG_NATIVE_HYBRID": "0"})
    assert not native_hybrid_enabled({})
