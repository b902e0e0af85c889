"""One LlamaIndex retriever per channel, over the Milvus catalog.

QueryFusionRetriever hands one QueryBundle to every retriever, and a retriever that cached its embedding on
the bundle would send a 512-d CLIP vector to a 384-d caption field. So the engine computes each channel's
query input once (`SearchQuery.inputs`: a vector or a text per channel) and the retrievers only read it.
Per-query options travel on the bundle, so the retrievers stay stateless; each records its ranked ids on the
bundle (`SearchQuery.ranks`) for the JSON `ranks`.
Nodes carry only the image id: fields are fetched once, for the ids the fused list returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag.channels import Channel
from rag.milvus_filters import Filter
from rag.store import CatalogStore


@dataclass
class SearchQuery(QueryBundle):
    """A query plus what every channel retriever needs for this call."""

    inputs: dict[str, Any] = field(default_factory=dict)  # channel -> vector or text (absent: nothing to search)
    top_k: int = 50
    filter: Filter = field(default_factory=Filter)
    exclude: list[list[frozenset[str]]] = field(default_factory=list)  # BM25: negative parts' token groups
    exclude_ids: frozenset[str] = frozenset()
    timings_ms: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, dict[str, int]] = field(default_factory=dict)  # channel -> id -> rank (1-based)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # channel -> id -> the channel's own score

    def __hash__(self) -> int:  # QueryBundle is hashed by some callback handlers
        return hash((self.query_str, self.top_k, tuple(sorted(self.inputs))))


def id_node(doc_id: str, score: float) -> NodeWithScore:
    # QueryFusionRetriever merges by node.hash, which covers text and metadata: the id in metadata keeps it unique.
    return NodeWithScore(node=TextNode(id_=doc_id, text="", metadata={"id": doc_id}), score=score)


class ChannelRetriever(BaseRetriever):
    """Searches one channel's field in the catalog with the input the engine computed for it."""

    def __init__(self, channel: Channel, store: CatalogStore) -> None:
        super().__init__()
        self.channel = channel
        self.store = store

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if not isinstance(query_bundle, SearchQuery):
            raise TypeError("ChannelRetriever needs a SearchQuery (built by SearchEngine)")
        query = query_bundle
        data = query.inputs.get(self.channel.name)
        if data is None:
            query.ranks[self.channel.name] = {}
            query.scores[self.channel.name] = {}
            return []
        started = time.perf_counter()
        # The filter already excludes the query image's own id.
        hits = self.store.search(self.channel, data, query.top_k, query.filter, exclude=query.exclude)
        query.timings_ms[self.channel.name] = (time.perf_counter() - started) * 1000
        query.ranks[self.channel.name] = {doc_id: rank for rank, (doc_id, _) in enumerate(hits, start=1)}
        query.scores[self.channel.name] = dict(hits)
        return [id_node(doc_id, score) for doc_id, score in hits]
