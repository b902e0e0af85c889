"""Milvus-native hybrid search: the three-way CLIP + caption + BM25 search done inside Milvus.

Milvus' `hybrid_search` fuses requests over the vector fields of ONE collection, while the catalog lives
in two (image vectors, caption vectors; rag/store.py). This module keeps a third collection,
`{prefix}_hybrid`, with one row per image holding both dense vectors, the caption and a BM25 sparse
field that a Milvus BM25 Function fills from the caption text, and answers a query with one
`hybrid_search` of up to three `AnnSearchRequest`s fused by `RRFRanker`.

It is a flag (MMRAG_NATIVE_HYBRID=1, or `native_hybrid_enabled()`): indexing mirrors rows into it
(`NativeHybridIndex.upsert` / `sync_from_store`), search goes through `search_native(engine, ...)`.

Built to return the same ranking as the LlamaIndex path (rag/fusion.py + rag/bm25.py):
- BM25 text is pre-tokenised with rag.bm25.tokenize (stop words, plural folding), which the Milvus standard
  analyzer splits back into the same tokens, scored with k1=1.5, b=0.75 and Lucene IDF as rag/bm25.py does;
- LlamaIndex RRF scores 1/(k + rank0) while Milvus RRFRanker(k) scores 1/(k + rank0 + 1), so
  RRFRanker(rrf_k - 1) reproduces rrf_k exactly;
- ties are broken by id, as rag/fusion.py does, after Milvus returns every fused candidate.
Known differences: Milvus RRFRanker has no per-retriever weights (unequal weights raise; weight 0 drops
a retriever), Milvus Lite computes BM25 IDF per segment (rankings can drift once a catalog spans several
flushed segments), and per-retriever ranks are not returned (JSON `ranks` are null).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from tqdm import tqdm

from rag.bm25 import tokenize
from rag.catalog import CatalogRecord
from rag.config import Settings
from rag.errors import MmragError, StoreUnavailableError
from rag.index_params import index_params_for, is_milvus_lite, search_config_for_k

if TYPE_CHECKING:
    from rag.search import SearchEngine, SearchResponse
    from rag.store import CatalogStore

log = logging.getLogger(__name__)

HYBRID_SUFFIX = "_hybrid"
ID_FIELD, TEXT_FIELD, PATH_FIELD, BM25_TEXT_FIELD = "id", "text", "path", "bm25_text"
SPARSE_FIELD, CAPTION_FIELD, CLIP_FIELD = "sparse", "caption_vector", "clip_vector"
RESERVED = {ID_FIELD, TEXT_FIELD, PATH_FIELD, BM25_TEXT_FIELD, SPARSE_FIELD, CAPTION_FIELD, CLIP_FIELD, "$meta"}
# rank-bm25's Okapi defaults, which rag/bm25.py uses (a Milvus server defaults to k1=1.2).
BM25_INDEX_PARAMS = {"bm25_k1": 1.5, "bm25_b": 0.75}
# The text is already rag.bm25 tokens ([a-z0-9]+, space-separated): the standard analyzer (the one Milvus
# Lite and a server both have) splits it back into exactly those tokens.
BM25_ANALYZER = {"tokenizer": "standard"}
MAX_VARCHAR = 65_535
MAX_LIMIT = 16_384
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ROUTES = {"clip": CLIP_FIELD, "caption": CAPTION_FIELD, "bm25": SPARSE_FIELD}


def native_hybrid_enabled(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return (env.get("MMRAG_NATIVE_HYBRID") or "").strip().lower() in {"1", "true", "yes", "on"}


def bm25_text(caption: str) -> str:
    return " ".join(tokenize(caption or ""))[: MAX_VARCHAR // 4]  # VARCHAR limit is in bytes


def filter_expr(filters: dict[str, Any] | None, exclude_ids: Iterable[str] = ()) -> str:
    """A Milvus boolean expression for exact-match metadata filters (dynamic fields) and excluded ids."""
    clauses = []
    for key, value in (filters or {}).items():
        if not _FIELD_NAME.fullmatch(key) or key in RESERVED:
            raise MmragError(f"cannot filter on {key!r} in native hybrid search")
        if isinstance(value, bool):
            literal = "true" if value else "false"
        elif isinstance(value, (int, float)):
            literal = repr(value)
        else:
            literal = json.dumps(str(value))
        clauses.append(f"{key} == {literal}")
    excluded = sorted(set(exclude_ids))
    if excluded:
        clauses.append(f"{ID_FIELD} not in {json.dumps(excluded)}")
    return " and ".join(clauses)


@dataclass
class NativeHit:
    id: str
    score: float


class NativeHybridIndex:
    """The `{prefix}_hybrid` collection: id, caption text, BM25 sparse field, caption vector, CLIP vector."""

    def __init__(self, client: Any, name: str, *, text_dim: int, clip_dim: int | None, server: bool = False) -> None:
        self.client = client
        self.name = name
        self.text_dim = text_dim
        self.clip_dim = clip_dim
        self.server = server
        self.search_config: dict = {}

    @classmethod
    def open(cls, settings: Settings, *, text_dim: int, clip_dim: int | None, client: Any = None) -> "NativeHybridIndex":
        if client is None:
            from pymilvus import MilvusClient

            try:
                client = MilvusClient(uri=settings.store_uri, token=settings.token, timeout=10)
            except Exception as exc:
                raise StoreUnavailableError(f"cannot open Milvus at {settings.store_uri}: {str(exc).splitlines()[0][:200]}") from exc
        index = cls(client, settings.collection_prefix + HYBRID_SUFFIX, text_dim=text_dim, clip_dim=clip_dim,
                    server=not is_milvus_lite(client))
        if index.exists:
            index._adopt_existing()
        return index

    @property
    def exists(self) -> bool:
        return self.name in self.client.list_collections()

    @property
    def has_clip(self) -> bool:
        return self.clip_dim is not None

    def _adopt_existing(self) -> None:
        # A reopened store starts with indexed collections released; Milvus searches only loaded ones.
        from pymilvus.client.types import LoadState

        if self.client.get_load_state(self.name).get("state") != LoadState.Loaded:
            self.client.load_collection(self.name)
        fields = {f["name"]: f for f in self.client.describe_collection(self.name)["fields"]}
        stored_text = int(fields[CAPTION_FIELD]["params"]["dim"])
        if stored_text != self.text_dim:
            raise StoreUnavailableError(
                f"collection {self.name} holds {stored_text}-d caption vectors, the text model makes {self.text_dim}-d ones")
        stored_clip = int(fields[CLIP_FIELD]["params"]["dim"]) if CLIP_FIELD in fields else None
        if self.clip_dim is not None and stored_clip is not None and stored_clip != self.clip_dim:
            raise StoreUnavailableError(
                f"collection {self.name} holds {stored_clip}-d CLIP vectors, the CLIP model makes {self.clip_dim}-d ones")
        self.clip_dim = stored_clip
        index = self.client.describe_index(self.name, CAPTION_FIELD) or {}
        index_type = str(index.get("index_type") or "FLAT")
        overrides = {"index_type": index_type} if index_type in ("FLAT", "HNSW", "IVF_FLAT") else {}
        self.search_config = index_params_for(int(index.get("total_rows") or 0), overrides=overrides, server=self.server)[1]

    def create(self, expected_rows: int) -> None:
        """Create the collection with index types sized for expected_rows (rag.index_params)."""
        from pymilvus import DataType, Function, FunctionType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field(TEXT_FIELD, DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field(PATH_FIELD, DataType.VARCHAR, max_length=4096)
        schema.add_field(BM25_TEXT_FIELD, DataType.VARCHAR, max_length=MAX_VARCHAR, enable_analyzer=True,
                         analyzer_params=BM25_ANALYZER)
        schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field(CAPTION_FIELD, DataType.FLOAT_VECTOR, dim=self.text_dim)
        if self.clip_dim is not None:
            schema.add_field(CLIP_FIELD, DataType.FLOAT_VECTOR, dim=self.clip_dim)
        schema.add_function(Function(name="caption_bm25", function_type=FunctionType.BM25,
                                     input_field_names=[BM25_TEXT_FIELD], output_field_names=[SPARSE_FIELD]))
        index_config, self.search_config = index_params_for(expected_rows, metric="COSINE", server=self.server)
        params = self.client.prepare_index_params()
        dense = {k: v for k, v in index_config.items() if k not in ("index_type", "metric_type")}
        for field in (CAPTION_FIELD, CLIP_FIELD) if self.clip_dim is not None else (CAPTION_FIELD,):
            params.add_index(field_name=field, index_type=index_config["index_type"],
                             metric_type=index_config["metric_type"], params=dense)
        # Nested "params" too: Milvus Lite's gRPC adapter reads only that key (see rag/index_params.py).
        params.add_index(field_name=SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                         params={**BM25_INDEX_PARAMS, "params": dict(BM25_INDEX_PARAMS)})
        self.client.create_collection(self.name, schema=schema, index_params=params, consistency_level="Strong")
        log.info("created %s (%s, BM25 k1=1.5 b=0.75)", self.name, index_config["index_type"])

    def upsert(self, records: Sequence[CatalogRecord], text_vectors: Sequence[Sequence[float]],
               image_vectors: Sequence[Sequence[float]] | None = None, *, expected_rows: int | None = None,
               flush: bool = True) -> int:
        """Write one row per record (idempotent: keyed by the content-hash id). Returns rows written.

        Flush once per batch of work, not per small call: Milvus Lite keeps BM25 statistics per flushed
        segment, so fewer, larger segments keep BM25 scores identical to the in-memory rag/bm25.py.
        """
        if not records:
            return 0
        if not self.exists:
            self.create(expected_rows if expected_rows is not None else len(records))
        if self.has_clip and image_vectors is None:
            raise MmragError(f"{self.name} has a CLIP field: image vectors are required")
        rows = []
        for i, record in enumerate(records):
            row = {k: v for k, v in record.metadata.items() if k not in RESERVED and _FIELD_NAME.fullmatch(k)}
            row.update({
                ID_FIELD: record.id, TEXT_FIELD: record.caption[: MAX_VARCHAR // 4], PATH_FIELD: record.path,
                BM25_TEXT_FIELD: bm25_text(record.caption), CAPTION_FIELD: [float(x) for x in text_vectors[i]],
            })
            if self.has_clip:
                row[CLIP_FIELD] = [float(x) for x in image_vectors[i]]  # type: ignore[index]
            rows.append(row)
        self.client.upsert(self.name, rows)
        if flush:
            self.client.flush(self.name)
        return len(rows)

    def sync_from_store(self, store: "CatalogStore", *, batch_size: int = 256, show_progress: bool = True) -> int:
        """Copy rows the catalog collections hold and this one lacks (vectors are read, not re-embedded)."""
        catalog = store.load_catalog()
        have = self.ids() if self.exists else set()
        missing = [catalog[i] for i in sorted(set(catalog) - have)]
        if self.has_clip and store.image is None:
            raise MmragError("the native hybrid collection has a CLIP field but the store has no image collection")
        written = 0
        for start in tqdm(range(0, len(missing), batch_size), desc="native hybrid sync", disable=not show_progress or None):
            batch = missing[start : start + batch_size]
            ids = [r.id for r in batch]
            text = _vectors(store.client, store.settings.caption_collection, ids)
            image = _vectors(store.client, store.settings.image_collection, ids) if self.has_clip else {}
            ready = [r for r in batch if r.id in text and (not self.has_clip or r.id in image)]
            written += self.upsert(ready, [text[r.id] for r in ready], [image[r.id] for r in ready] if self.has_clip else None,
                                   expected_rows=len(catalog), flush=False)
        if written:
            self.client.flush(self.name)
        return written

    def ids(self) -> set[str]:
        iterator = self.client.query_iterator(self.name, batch_size=1000, filter="", output_fields=[ID_FIELD])
        out: set[str] = set()
        while rows := iterator.next():
            out.update(row[ID_FIELD] for row in rows)
        iterator.close()
        return out

    def count(self) -> int:
        return len(self.ids()) if self.exists else 0

    def search(self, *, text: str | None = None, caption_vector: Sequence[float] | None = None,
               clip_vector: Sequence[float] | None = None, k: int = 10, candidates: int = 50,
               filters: dict[str, Any] | None = None, exclude_ids: Iterable[str] = (),
               weights: dict[str, float] | None = None, rrf_k: float = 60.0) -> list[NativeHit]:
        """One hybrid_search over the routes that have a query (and a non-zero weight); best first."""
        from pymilvus import AnnSearchRequest, RRFRanker

        if not self.exists:
            raise MmragError(f"no native hybrid index {self.name}: index with MMRAG_NATIVE_HYBRID=1 (or sync it) first")
        active = _active_routes(weights)
        expr = filter_expr(filters, exclude_ids)
        dense_params = search_config_for_k(self.search_config, candidates)
        requests = []
        if "clip" in active and clip_vector is not None and self.has_clip:
            requests.append(AnnSearchRequest([list(clip_vector)], CLIP_FIELD, dense_params, candidates, expr=expr or None))
        if "caption" in active and caption_vector is not None:
            requests.append(AnnSearchRequest([list(caption_vector)], CAPTION_FIELD, dense_params, candidates, expr=expr or None))
        query_terms = bm25_text(text or "")
        if "bm25" in active and query_terms:
            requests.append(AnnSearchRequest([query_terms], SPARSE_FIELD, {"metric_type": "BM25"}, candidates, expr=expr or None))
        if not requests:
            return []
        # Every fused candidate comes back so ties can be broken by id exactly as rag/fusion.py does.
        limit = min(MAX_LIMIT, candidates * len(requests))
        result = self.client.hybrid_search(self.name, requests, ranker=RRFRanker(rrf_k - 1), limit=limit,
                                           output_fields=[ID_FIELD])
        # rag/fusion.py (QueryFusionRetriever) normalises the weights to sum to 1: equal weights = 1/n each.
        hits = [NativeHit(str(h["id"]), float(h["distance"]) / len(requests)) for h in result[0]]
        hits.sort(key=lambda h: (-round(h.score, 8), h.id))  # float32 scores: equal RRF sums may differ in the last bit
        return hits[:k]

    def drop(self) -> None:
        if self.exists:
            self.client.drop_collection(self.name)


def _active_routes(weights: dict[str, float] | None) -> list[str]:
    weights = {name: 1.0 for name in ROUTES} | (weights or {})
    active = [name for name in ROUTES if weights.get(name, 1.0) > 0]
    distinct = {weights[name] for name in active}
    if len(distinct) > 1:
        raise MmragError(
            "native hybrid search fuses with Milvus' RRFRanker, which has no per-retriever weights: "
            "use equal weights (or 0 to drop a retriever), or the default LlamaIndex fusion"
        )
    return active


def _vectors(client: Any, collection: str, ids: list[str]) -> dict[str, list[float]]:
    if not ids or collection not in client.list_collections():
        return {}
    rows = client.get(collection, ids=ids, output_fields=["id", "embedding"])
    return {row["id"]: list(row["embedding"]) for row in rows}


def search_native(engine: "SearchEngine", text: str | None = None, *, image: str | Path | None = None, k: int = 10,
                  filters: dict[str, str] | None = None, weights: dict[str, float] | None = None,
                  index: NativeHybridIndex | None = None) -> "SearchResponse":
    """SearchEngine.search(mode="hybrid") answered by one Milvus hybrid_search; same JSON contract, ranks null."""
    from rag.config import RETRIEVERS
    from rag.search import CANDIDATES_PER_RETRIEVER, SearchResponse, SearchResult, coerce_filters

    started = time.perf_counter()
    if k < 1:
        raise MmragError("k must be at least 1")
    if index is None:
        index = getattr(engine, "_native_hybrid", None)
        if index is None:
            clip_dim = engine.clip.dim if engine.clip is not None else None
            index = NativeHybridIndex.open(engine.settings, text_dim=int(getattr(engine.text_embedder, "dim")),
                                           clip_dim=clip_dim, client=engine.store.client)
            engine._native_hybrid = index  # type: ignore[attr-defined]
    query = engine._make_query(text, image, k, coerce_filters(filters, engine.field_types))
    timings: dict[str, float] = {}
    clip_vector = caption_vector = None
    if engine.clip is not None and index.has_clip:
        t = time.perf_counter()
        clip_vector = engine._clip_query_vector(query)
        timings["embed_clip"] = (time.perf_counter() - t) * 1000
    if query.query_str:
        t = time.perf_counter()
        caption_vector = engine._caption_query_vector(query)
        timings["embed_caption"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    hits = index.search(text=query.query_str, caption_vector=caption_vector, clip_vector=clip_vector, k=k,
                        candidates=max(k, CANDIDATES_PER_RETRIEVER), filters=query.filters,
                        exclude_ids=query.exclude_ids, weights={**engine.settings.fusion_weights, **(weights or {})},
                        rrf_k=engine.settings.rrf_k)
    timings["milvus_hybrid"] = (time.perf_counter() - t) * 1000
    results = []
    for rank, hit in enumerate(hits, start=1):
        record = engine.catalog.get(hit.id)
        if record is None:  # mirrored row whose catalog record is gone: never show a dangling id
            continue
        results.append(SearchResult(record.id, record.path, hit.score, rank, {name: None for name in RETRIEVERS},
                                    record.caption, record.metadata))
    timings["total"] = (time.perf_counter() - started) * 1000
    return SearchResponse(text if text is not None else "", "hybrid", results, timings,
                          image=str(image) if image is not None else None)
