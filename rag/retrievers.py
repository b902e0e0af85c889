"""The three LlamaIndex retrievers: CLIP vectors, caption vectors, BM25 over caption text.

QueryFusionRetriever hands one QueryBundle to every retriever, and a retriever that caches its
embedding on the bundle would send a 512-d CLIP vector to the 384-d caption store. These
retrievers never read or write `bundle.embedding`: each embeds the query with its own model.
Search options travel on the bundle (SearchQuery) so the retrievers stay stateless.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from rag.bm25 import BM25Index
from rag.catalog import CatalogRecord, filter_matches
from rag.store import CatalogStore


@dataclass
class SearchQuery(QueryBundle):
    """A query plus the per-call options every retriever needs.

    query_str is the text (for an image query: that image's caption, when known, for the text retrievers);
    image_path is set for image→image; exclude_ids drops the query image's own hit.
    """

    top_k: int = 50
    filters: dict[str, Any] = field(default_factory=dict)
    exclude_ids: frozenset[str] = frozenset()
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __hash__(self) -> int:  # QueryBundle is hashed by some callback handlers
        return hash((self.query_str, self.image_path, self.top_k))


class CatalogRetriever(BaseRetriever):
    """Base: turns (id, score) hits into the catalog's canonical nodes, dropping excluded ids."""

    name = "base"

    def __init__(self, catalog: dict[str, CatalogRecord]) -> None:
        super().__init__()
        self.catalog = catalog

    def _hits(self, query: SearchQuery) -> list[tuple[str, float]]:
        raise NotImplementedError

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = query_bundle if isinstance(query_bundle, SearchQuery) else SearchQuery(query_str=query_bundle.query_str)
        started = time.perf_counter()
        hits = self._hits(query)
        query.timings_ms[self.name] = (time.perf_counter() - started) * 1000
        nodes = []
        for doc_id, score in hits:
            record = self.catalog.get(doc_id)
            if record is None or doc_id in query.exclude_ids:
                continue
            nodes.append(NodeWithScore(node=record.node(), score=float(score)))
        return nodes[: query.top_k]


class VectorRetriever(CatalogRetriever):
    """Dense search in one Milvus collection with a query embedder of its own."""

    def __init__(self, name: str, store: CatalogStore, collection: str, embed: Callable[[SearchQuery], list[float] | None],
                 catalog: dict[str, CatalogRecord]) -> None:
        super().__init__(catalog)
        self.name = name
        self._store = store
        self._collection = collection
        self._embed = embed

    def _hits(self, query: SearchQuery) -> list[tuple[str, float]]:
        vector = self._embed(query)
        if vector is None:
            return []
        # One extra per excluded id so dropping the self-hit still leaves top_k.
        return self._store.search(self._collection, vector, query.top_k + len(query.exclude_ids), query.filters)


class BM25Retriever(CatalogRetriever):
    name = "bm25"

    def __init__(self, catalog: dict[str, CatalogRecord]) -> None:
        super().__init__(catalog)
        self.index = BM25Index(list(catalog), [r.caption for r in catalog.values()])

    def _hits(self, query: SearchQuery) -> list[tuple[str, float]]:
        allowed = None
        if query.filters:
            allowed = {i for i, r in self.catalog.items() if filter_matches(r.metadata, query.filters)}
        return self.index.top(query.query_str, query.top_k, allowed=allowed, exclude=set(query.exclude_ids))
