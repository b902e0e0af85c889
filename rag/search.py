"""SearchEngine: opens the store and models once, answers text and image queries in any mode.

The JSON form (`SearchResponse.to_dict`) is a stable contract read by the eval harness and the app.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llama_index.core.retrievers import BaseRetriever

from rag.catalog import CatalogRecord, Scalar
from rag.clip_embedding import ClipEmbedding, load_clip
from rag.config import MODES, RETRIEVERS, Settings
from rag.errors import MmragError
from rag.fusion import WeightedRRFRetriever
from rag.hashing import file_sha256
from rag.milvus_hybrid import native_hybrid_enabled, search_native
from rag.retrievers import BM25Retriever, SearchQuery, VectorRetriever
from rag.store import CatalogStore
from rag.text_embedding import embedder_dim, make_text_embedder

CANDIDATES_PER_RETRIEVER = 50


@dataclass
class SearchResult:
    id: str
    path: str
    score: float
    rank: int
    ranks: dict[str, int | None]
    caption: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResponse:
    query: str
    mode: str
    results: list[SearchResult]
    timings_ms: dict[str, float]
    image: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query": self.query,
            "mode": self.mode,
            "results": [{k: v for k, v in asdict(r).items() if k != "metadata"} for r in self.results],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }
        if self.image is not None:
            out["image"] = self.image
        return out


def field_types(catalog: dict[str, CatalogRecord]) -> dict[str, type]:
    """The filterable (scalar) metadata fields of a catalog and the type each holds."""
    types: dict[str, type] = {}
    for record in catalog.values():
        for key, value in record.metadata.items():
            if isinstance(value, (str, int, float, bool)):
                types.setdefault(key, type(value))
    return types


def coerce_filters(filters: dict[str, str] | None, types: dict[str, type]) -> dict[str, Scalar]:
    """Give each KEY=VALUE filter the type its field has (see field_types); unknown keys are an error."""
    if not filters:
        return {}
    typed: dict[str, Scalar] = {}
    for key, raw in filters.items():
        if key == "path":
            raise MmragError("filter on 'path' is not supported; filter on a catalog field instead")
        kind = types.get(key)
        if kind is None:
            known = ", ".join(sorted(types)) or "none (the catalog has no filterable fields)"
            raise MmragError(f"unknown filter field {key!r}; filterable fields: {known}")
        try:
            typed[key] = (raw.lower() in ("1", "true", "yes")) if kind is bool else kind(raw)
        except ValueError:
            raise MmragError(f"filter {key}={raw!r}: {key} holds {kind.__name__} values") from None
    return typed


def _settings_with_index_models(settings: Settings, stored: dict[str, str | None]) -> Settings:
    from dataclasses import replace

    clip = stored.get("clip_model")
    return replace(settings, clip_model=None if clip in (None, "none") else clip,
                   text_model=stored.get("text_model") or settings.text_model)


class SearchEngine:
    def __init__(self, settings: Settings, store: CatalogStore, clip: ClipEmbedding | None, text_embedder: Any) -> None:
        self.settings = settings
        self.store = store
        self.clip = clip
        self.text_embedder = text_embedder
        self.catalog: dict[str, CatalogRecord] = store.load_catalog()
        self.field_types = field_types(self.catalog)  # once per open, not per filtered query
        self._bm25 = BM25Retriever(self.catalog)
        self._retrievers = self._build_retrievers()

    @staticmethod
    def limit_query_threads() -> None:
        """One torch + one BLAS thread for single-query inference (bench/RESULTS.md 2b; MMRAG_QUERY_THREADS=0 keeps defaults).

        Call it where a process only searches (`mmrag search`, the app); indexing keeps both cores (1.8x on batches).
        """
        import os

        threads = int(os.environ.get("MMRAG_QUERY_THREADS", "1") or 0)
        if threads > 0:
            import torch
            from threadpoolctl import threadpool_limits

            torch.set_num_threads(threads)
            threadpool_limits(1, user_api="blas")

    @classmethod
    def open(cls, settings: Settings, *, clip: ClipEmbedding | None = None, text_embedder: Any = None,
             models_from_index: bool = False) -> "SearchEngine":
        """Open for search. Models may be passed in to share them (the app and eval load them once).

        models_from_index: use the CLIP and text models recorded in the index instead of the settings'.
        """
        if settings.is_embedded and not Path(settings.store_uri).exists():
            raise MmragError(f"no index at {settings.store_uri}: run `mmrag index PATH` first (or pass --data-dir/--uri)")
        stored = CatalogStore.peek_models(settings)  # reach the store before paying for model loads
        if stored is None:
            raise MmragError(f"no index at {settings.store_uri}: run `mmrag index PATH` first")
        if models_from_index and clip is None and text_embedder is None and stored:
            settings = _settings_with_index_models(settings, stored)
        if clip is None and settings.clip_model:
            clip = load_clip(settings.clip_model, batch_size=settings.batch_size)
        text_embedder = text_embedder or make_text_embedder(settings.text_model)
        store = CatalogStore(settings, image_dim=clip.dim if clip else None, text_dim=embedder_dim(text_embedder), create=False)
        if store.caption is None:
            store.close()
            raise MmragError(f"no index at {settings.store_uri}: run `mmrag index PATH` first")
        if stored.get("text_model") and stored["text_model"] != text_embedder.model_name:
            store.close()
            raise MmragError(
                f"the index at {settings.store_uri} was built with text model {stored['text_model']!r}, "
                f"not {text_embedder.model_name!r}: pass --text-model {stored['text_model']}"
            )
        return cls(settings, store, clip, text_embedder)

    def _build_retrievers(self) -> dict[str, BaseRetriever]:
        retrievers: dict[str, BaseRetriever] = {}
        if self.clip is not None and self.store.image is not None:
            retrievers["clip"] = VectorRetriever("clip", self.store, "image", self._clip_query_vector, self.catalog)
        retrievers["caption"] = VectorRetriever("caption", self.store, "caption", self._caption_query_vector, self.catalog)
        retrievers["bm25"] = self._bm25
        return retrievers

    def _clip_query_vector(self, query: SearchQuery) -> list[float] | None:
        if query.image_path:
            return self.clip.get_image_embedding(query.image_path)
        return self.clip.get_query_embedding(query.query_str) if query.query_str else None

    def _caption_query_vector(self, query: SearchQuery) -> list[float] | None:
        return self.text_embedder.get_query_embedding(query.query_str) if query.query_str else None

    @property
    def available_modes(self) -> list[str]:
        return [m for m in MODES if m == "hybrid" or m in self._retrievers]

    def search(self, text: str | None = None, *, image: str | Path | None = None, mode: str = "hybrid", k: int = 10,
               filters: dict[str, str] | None = None, weights: dict[str, float] | None = None) -> SearchResponse:
        started = time.perf_counter()
        if mode not in MODES:
            raise MmragError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if mode not in self.available_modes:
            raise MmragError("mode 'clip' needs a CLIP model: index and search with --clip-model ID_OR_DIR")
        if k < 1:
            raise MmragError("k must be at least 1")
        if mode == "hybrid" and native_hybrid_enabled():
            # The same RRF fusion done by one Milvus hybrid_search (rag/milvus_hybrid.py); JSON ranks are null.
            return search_native(self, text, image=image, k=k, filters=filters, weights=weights)
        query = self._make_query(text, image, k, coerce_filters(filters, self.field_types))
        names = self._retrievers_for(mode, query, weights)
        if not names:
            raise MmragError("nothing to search with: an image query needs --mode clip or hybrid with a CLIP model, "
                             "or an image that is already in the catalog (its caption is used)")
        if len(names) == 1:
            nodes = self._retrievers[names[0]].retrieve(query)
            ranks = {names[0]: {n.node.node_id: i for i, n in enumerate(nodes, start=1)}}
        else:
            fusion = WeightedRRFRetriever({n: self._retrievers[n] for n in names}, self._weights(weights),
                                          top_k=k, rrf_k=self.settings.rrf_k)
            nodes = fusion.retrieve(query)
            ranks = fusion.last_ranks
        results = []
        for rank, hit in enumerate(nodes[:k], start=1):
            record = self.catalog[hit.node.node_id]
            per = {name: ranks.get(name, {}).get(record.id) if name in names else None for name in RETRIEVERS}
            results.append(SearchResult(record.id, record.path, float(hit.score or 0.0), rank, per, record.caption, record.metadata))
        timings = dict(query.timings_ms)
        timings["total"] = (time.perf_counter() - started) * 1000
        shown = text if text is not None else ""
        return SearchResponse(shown, mode, results, timings, image=str(image) if image is not None else None)

    def _weights(self, weights: dict[str, float] | None) -> dict[str, float]:
        return {**self.settings.fusion_weights, **(weights or {})}

    def _make_query(self, text: str | None, image: str | Path | None, k: int, filters: dict[str, Scalar]) -> SearchQuery:
        top_k = max(k, CANDIDATES_PER_RETRIEVER)
        if image is None:
            if not text or not text.strip():
                raise MmragError("empty query: give text, or --image PATH")
            return SearchQuery(query_str=text.strip(), top_k=top_k, filters=filters)
        path = Path(image)
        if not path.is_file():
            raise MmragError(f"query image not found: {path}")
        own_id = file_sha256(path)
        own = self.catalog.get(own_id)
        # The text retrievers search with the query image's caption when it is a catalog image.
        caption = text or (own.caption if own else "")
        return SearchQuery(query_str=caption, image_path=str(path), top_k=top_k, filters=filters, exclude_ids=frozenset({own_id}))

    def _retrievers_for(self, mode: str, query: SearchQuery, weights: dict[str, float] | None) -> list[str]:
        if mode != "hybrid":
            needs_text = mode in ("caption", "bm25")
            return [mode] if not (needs_text and not query.query_str) else []
        chosen = self._weights(weights)
        return [n for n in self._retrievers if chosen.get(n, 1.0) > 0 and (n == "clip" or query.query_str)]

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "SearchEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
