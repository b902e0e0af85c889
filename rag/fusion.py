"""Fusion strategies: client-side weighted RRF (a LlamaIndex retriever) or Milvus' hybrid_search.

client: `WeightedRRFRetriever` is a BaseRetriever over the channel retrievers. With equal weights it runs
LlamaIndex's own `QueryFusionRetriever(mode="reciprocal_rerank")`; QueryFusionRetriever's RRF ignores
`retriever_weights` (and fixes k=60), so unequal weights (or another k) are applied here:
score(d) = sum_i w_i / (k + rank_i(d)), rank from 0, weights scaled to average 1, so equal weights give exactly
QueryFusionRetriever's scores (and Milvus RRFRanker's: see CatalogStore.hybrid_search).
Equal-weight RRF of a weak and a strong channel can rank below the strong one alone: weights are how the
eval's findings are applied.

native: one `hybrid_search` over the catalog's fields with `RRFRanker` (rag/store.py), which has no
per-channel weights: unequal weights are refused (0 still drops a channel), and per-channel ranks are unknown.
"""

from __future__ import annotations

from llama_index.core.llms import MockLLM
from llama_index.core.retrievers import BaseRetriever, QueryFusionRetriever
from llama_index.core.retrievers.fusion_retriever import FUSION_MODES
from llama_index.core.schema import NodeWithScore, QueryBundle

from rag.errors import MmragError

LLAMAINDEX_RRF_K = 60.0  # QueryFusionRetriever._reciprocal_rerank_fusion's fixed k


class WeightedRRFRetriever(BaseRetriever):
    def __init__(self, retrievers: dict[str, BaseRetriever], weights: dict[str, float], *, top_k: int,
                 rrf_k: float = LLAMAINDEX_RRF_K) -> None:
        super().__init__()
        self.retrievers = retrievers
        total = sum(weights.get(name, 1.0) for name in retrievers)
        if total <= 0:
            raise MmragError("every channel has weight 0: give at least one a weight above 0")
        self.weights = {name: weights.get(name, 1.0) * len(retrievers) / total for name in retrievers}
        self.top_k = top_k
        self.rrf_k = rrf_k

    @property
    def uses_llamaindex_rrf(self) -> bool:
        return len(set(self.weights.values())) <= 1 and self.rrf_k == LLAMAINDEX_RRF_K

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.uses_llamaindex_rrf:
            fusion = QueryFusionRetriever(
                list(self.retrievers.values()), llm=MockLLM(),  # num_queries=1: no query generation, no LLM call
                mode=FUSION_MODES.RECIPROCAL_RANK, similarity_top_k=self.top_k, num_queries=1, use_async=False)
            return _ordered(fusion.retrieve(query_bundle))[: self.top_k]
        fused: dict[str, float] = {}
        for name, retriever in self.retrievers.items():
            weight = self.weights[name]
            hits = sorted(retriever.retrieve(query_bundle), key=lambda n: n.score or 0.0, reverse=True)
            for rank, hit in enumerate(hits):
                fused[hit.node.node_id] = fused.get(hit.node.node_id, 0.0) + weight / (self.rrf_k + rank)
        order = sorted(fused, key=lambda doc_id: (-fused[doc_id], doc_id))
        from rag.retrievers import id_node

        return [id_node(doc_id, fused[doc_id]) for doc_id in order[: self.top_k]]


def _ordered(nodes: list[NodeWithScore]) -> list[NodeWithScore]:
    # QueryFusionRetriever leaves ties in arrival order; break them by id so results are deterministic.
    return sorted(nodes, key=lambda n: (-round(n.score or 0.0, 12), n.node.node_id))


def check_native_weights(weights: dict[str, float]) -> list[str]:
    """The channels native fusion runs (weight > 0); unequal positive weights are refused."""
    active = [name for name, w in weights.items() if w > 0]
    if len({weights[name] for name in active}) > 1:
        raise MmragError("native fusion (Milvus RRFRanker) has no per-channel weights: use equal weights "
                         "(0 drops a channel) or --fusion client")
    return active
