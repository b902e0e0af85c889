"""One engine, two fusion strategies, over a synthetic catalog in embedded Milvus Lite.

Small deterministic bag-of-words "embedders" stand in for the models: this tests the store, channels, filters
and fusion plumbing, never model quality. BM25 in Milvus is checked against rank-bm25 (the oracle) on the real
sample captions.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from rag.bm25 import BM25Index
from rag.channels import BM25, Channel, IndexItem, register, unregister
from rag.config import Settings
from rag.encoders import Encoders
from rag.errors import MmragError
from rag.hashing import file_sha256
from rag.search import SearchEngine
from rag.store import CatalogStore

VOCAB = (
    "red blue green yellow black white car truck bus bicycle dog cat horse bird street park beach kitchen "
    "table chair pizza cake man woman child boat train plane tree snow grass window"
).split()
QUERIES = ["red car", "dog on the beach", "white cats", "a man with a bicycle", "pizza kitchen table",
           "snow trees", "green bus street", "horse", "boats and planes", "black chair window"]
# Values a filter must match literally (or refuse): quotes, boolean words, brackets, backslashes, newline, CJK.
NASTY = ['say "hi"', "it's", 'x" or id != "', "[a] (b) {c}", "C:\\dir", "ends with \\", "line1\nline2", "日本",
         "a\tb"]


def _token_vector(token: str, dim: int) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(f"{dim}:{token}".encode())).standard_normal(dim)


def bag_of_words(text: str, dim: int) -> list[float]:
    tokens = [t for t in text.lower().split() if t]
    vector = sum((_token_vector(t, dim) for t in tokens), np.zeros(dim)) + 0.05 * _token_vector(text, dim)
    return (vector / np.linalg.norm(vector)).tolist()


class FakeText:
    model_name = "fake-bow-48"
    dim = 48

    def get_query_embedding(self, text: str) -> list[float]:
        return bag_of_words(text, self.dim)

    def get_text_embedding_batch(self, texts: list[str]) -> list[list[float]]:
        return [bag_of_words(t, self.dim) for t in texts]


class FakeClip:
    dim = 24
    model_id = "fake-clip"

    def __init__(self, by_hash: dict[str, list[float]]) -> None:
        self.by_hash = by_hash

    def get_query_embedding(self, text: str) -> list[float]:
        return bag_of_words(text, self.dim)

    def get_image_embedding(self, path: Path) -> list[float]:
        return self.by_hash[file_sha256(path)]

    def get_image_embedding_batch(self, images: list[str]) -> list[list[float]]:
        return [self.by_hash[i] for i in images]  # the fake "image" of an item is its id


def make_items(n: int, query_image: Path) -> list[IndexItem]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        words = rng.choice(VOCAB, size=int(rng.integers(3, 9)))
        caption = " ".join(words) + (" and two dogs" if i % 7 == 0 else "")
        doc_id = file_sha256(query_image) if i == 5 else f"{i:064x}"
        metadata = {"category": ["street", "animal", "food"][i % 3], "year": 2000 + i % 5, "flag": i % 2 == 0,
                    "label": NASTY[i % len(NASTY)] if i < 2 * len(NASTY) else "plain", "file_name": f"photo_{i}_{words[0]}.jpg"}
        items.append(IndexItem(doc_id, str(query_image) if i == 5 else f"/photos/{i}.jpg", doc_id, caption,
                               {"ocr": "STOP" if i % 11 == 0 else ""}, metadata))
    return items


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fusion")
    query_image = tmp / "query.png"
    query_image.write_bytes(b"\x89PNG fake bytes: only the content hash matters here")
    items = make_items(240, query_image)
    rng = np.random.default_rng(1)
    clip = FakeClip({item.id: (v / np.linalg.norm(v)).tolist() for item in items
                     for v in [rng.standard_normal(FakeClip.dim)]})
    encoders = Encoders(clip, FakeText())  # type: ignore[arg-type]
    settings = Settings(data_dir=tmp, clip_model="fake-clip", text_model=FakeText.model_name)
    store = CatalogStore.open(settings, create=True, dims=encoders.dims, models=encoders.models)
    for start in range(0, len(items), 64):  # several flushed segments, as a real index run makes
        batch = items[start:start + 64]
        vectors = {c.name: encoders.index_batch(c.encoder, [c.index_source(i) for i in batch])
                   for c in store.dense_channels}
        store.upsert(batch, vectors)
    store.flush()
    with SearchEngine(settings, store, encoders) as eng:
        yield eng, items, query_image


def ids(response) -> list[str]:
    return [r.id for r in response.results]


def test_native_hybrid_search_equals_client_rrf(engine) -> None:
    eng, _, _ = engine
    for query in QUERIES:
        client = eng.search(query, k=10, fusion="client")
        native = eng.search(query, k=10, fusion="native")
        assert ids(native) == ids(client), query
        assert [r.score for r in native.results] == pytest.approx([r.score for r in client.results], rel=1e-5)
        assert all(v is None for r in native.results for v in r.ranks.values())  # Milvus does not say per channel
        assert all(any(v is not None for v in r.ranks.values()) for r in client.results)


def test_native_refuses_unequal_weights_but_drops_zero_weight_channels(engine) -> None:
    eng, _, _ = engine
    with pytest.raises(MmragError, match="no per-channel weights"):
        eng.search("red car", fusion="native", weights={"clip": 2})
    dropped = eng.search("red car", k=10, fusion="native", weights={"clip": 0})
    assert ids(dropped) == ids(eng.search("red car", k=10, fusion="client", weights={"clip": 0}))


def test_filters_match_literally_in_every_mode_and_fusion(engine) -> None:
    eng, items, _ = engine
    for value in NASTY:
        expected = {i.id for i in items if i.metadata["label"] == value}
        assert len(expected) == 2
        for mode, fusion in [("clip", None), ("caption", None), ("bm25", None), ("hybrid", "client"), ("hybrid", "native")]:
            got = eng.search("red car dog", mode=mode, k=50, fusion=fusion, filters={"label": value})
            assert set(ids(got)) <= expected, (value, mode, fusion)
            if mode != "bm25":  # BM25 returns only captions holding a query term
                assert set(ids(got)) == expected, (value, mode, fusion)


def test_typed_filters_bools_numbers_and_refusals(engine) -> None:
    eng, items, _ = engine
    flagged = eng.search("dog", mode="caption", k=300, filters={"flag": "true", "year": "2003"})
    expected = {i.id for i in items if i.metadata["flag"] and i.metadata["year"] == 2003}
    assert set(ids(flagged)) == expected
    for filters, message in [({"flag": "maybe"}, "true/false"), ({"year": "nan"}, "holds int"),
                             ({"colour": "red"}, "unknown filter field"), ({"caption": "x"}, "cannot filter")]:
        with pytest.raises(MmragError, match=message):
            eng.search("dog", filters=filters)


def test_image_query_drops_its_own_hit_in_both_fusions(engine) -> None:
    eng, items, query_image = engine
    own = file_sha256(query_image)
    for fusion in ("client", "native"):
        response = eng.search(image=query_image, k=20, fusion=fusion)
        assert len(response.results) == 20 and own not in ids(response)


def test_opening_and_searching_read_no_catalog_rows(engine, monkeypatch) -> None:
    eng, _, _ = engine

    def no_scan(*args, **kwargs):
        raise AssertionError("a full scan on the search path")

    monkeypatch.setattr(CatalogStore, "_scan", no_scan)
    with CatalogStore.open(eng.settings) as store:
        assert store.field_types == {"category": "str", "year": "int", "flag": "bool", "label": "str", "file_name": "str"}
        again = SearchEngine(eng.settings, store, eng.encoders)
        assert len(again.search("dog on the beach", k=5).results) == 5


def test_ocr_channel_finds_text_in_images(engine) -> None:
    eng, items, _ = engine
    found = eng.search("stop", mode="ocr", k=50)
    assert set(ids(found)) == {i.id for i in items if i.sources["ocr"]}


def test_a_channel_is_one_declaration(tmp_path) -> None:
    """A fourth-plus channel, declared in a few lines, indexed and searched with no engine edits."""
    channel = register(Channel("filename", BM25, index_source=lambda item: item.metadata["file_name"].replace("_", " ")))
    try:
        query_image = tmp_path / "q.png"
        query_image.write_bytes(b"x")
        items = make_items(30, query_image)
        encoders = Encoders(None, FakeText())
        settings = Settings(data_dir=tmp_path, clip_model=None, text_model=FakeText.model_name)
        with CatalogStore.open(settings, create=True, dims=encoders.dims, models=encoders.models) as store:
            assert "filename" in [c.name for c in store.channels]
            store.upsert(items, {"caption": encoders.index_batch("text", [i.caption for i in items])})
            eng = SearchEngine(settings, store, encoders)
            hits = eng.search("photo 7", mode="filename", k=3)
            assert hits.results[0].path == "/photos/7.jpg"
            assert "filename" in eng.search("photo 7", k=3).results[0].ranks
    finally:
        unregister(channel.name)


def test_milvus_bm25_equals_rank_bm25_on_the_sample_captions(tmp_path, retrieval_data) -> None:
    """Milvus' BM25 function (k1=1.5, b=0.75, Lucene IDF) vs rank-bm25: same top-10 wherever scores are distinct."""
    rows = [json.loads(line) for line in (retrieval_data / "metadata.jsonl").read_text().splitlines() if line.strip()]
    captions = {f"{i:064x}": " ".join(r.get("captions") or [r.get("title", "")]) for i, r in enumerate(rows)}
    items = [IndexItem(i, f"/{i}.jpg", None, c, {}, {}) for i, c in captions.items()]
    encoders = Encoders(None, FakeText())
    settings = Settings(data_dir=tmp_path, clip_model=None, text_model=FakeText.model_name)
    oracle = BM25Index(list(captions), list(captions.values()))
    with CatalogStore.open(settings, create=True, dims=encoders.dims, models=encoders.models,
                           expected_rows=len(items)) as store:
        for start in range(0, len(items), 100):
            batch = items[start:start + 100]
            store.upsert(batch, {"caption": encoders.index_batch("text", [i.caption for i in batch])})
        bm25 = store.channel("bm25")
        compared = 0
        for query in ["giraffe", "a cat next to a laptop", "red double decker bus", "man wearing a tie", "pizza",
                      "people walking on a city street", "train station", "snowboard", "kitchen", "a clock tower"]:
            got = store.search(bm25, query, 10)
            want = oracle.top(query, 10)
            # Scores agree to a few percent (Milvus Lite keeps BM25 statistics per flushed segment), rankings exactly.
            # One flushed segment (as an index run writes): Milvus' statistics are catalog-wide, scores equal.
            assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-4), query
            distinct = [i for i in range(len(want)) if all(abs(want[i][1] - want[j][1]) > 1e-6 for j in range(len(want)) if j != i)]
            assert [got[i][0] for i in distinct] == [want[i][0] for i in distinct], query
            compared += len(distinct)
        assert compared >= 50
