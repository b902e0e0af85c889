"""Weighted reciprocal-rank fusion on LlamaIndex's QueryFusionRetriever, recording each retriever's ranks.

QueryFusionRetriever's own RRF ignores `retriever_weights`; equal weights let a weak retriever drag a
strong one down, so this applies them: score(d) = sum_i w_i / (k + rank_i(d)) (rank from 0, as upstream).
"""

from __future__ import annotations

from llama_index.core.llms import MockLLM
from llama_index.core.retrievers import BaseRetriever, QueryFusionRetriever
from llama_index.core.retrievers.fusion_retriever import FUSION_MODES
from llama_index.core.schema import NodeWithScore, QueryBundle


class WeightedRRFRetriever(QueryFusionRetriever):
    def __init__(self, retrievers: dict[str, BaseRetriever], weights: dict[str, float], *, top_k: int, rrf_k: float = 60.0) -> None:
        self.names = list(retrievers)
        super().__init__(
            list(retrievers.values()),
            llm=MockLLM(),  # num_queries=1: no query generation, no LLM call, no network
            mode=FUSION_MODES.RECIPROCAL_RANK,
            similarity_top_k=top_k,
            num_queries=1,
            use_async=False,
            retriever_weights=[weights.get(name, 1.0) for name in self.names],
        )
        self.rrf_k = rrf_k
        self.last_ranks: dict[str, dict[str, int]] = {}

    def _run_sync_queries(self, queries: list[QueryBundle]) -> dict[tuple[str, int], list[NodeWithScore]]:
        results = super()._run_sync_queries(queries)
        self.last_ranks = {
            self.names[i]: {n.node.node_id: rank for rank, n in enumerate(_by_score(nodes), start=1)}
            for (_, i), nodes in results.items()
        }
        return results

    def _reciprocal_rerank_fusion(self, results: dict[tuple[str, int], list[NodeWithScore]]) -> list[NodeWithScore]:
        fused: dict[str, float] = {}
        best: dict[str, NodeWithScore] = {}
        for (_, i), nodes in results.items():
            weight = self._retriever_weights[i]
            for rank, hit in enumerate(_by_score(nodes)):
                key = hit.node.hash
                best.setdefault(key, hit)
                fused[key] = fused.get(key, 0.0) + weight / (rank + self.rrf_k)
        order = sorted(fused, key=lambda key: (-fused[key], best[key].node.node_id))
        return [NodeWithScore(node=best[key].node, score=fused[key]) for key in order]


def _by_score(nodes: list[NodeWithScore]) -> list[NodeWithScore]:
    return sorted(nodes, key=lambda n: n.score or 0.0, reverse=True)
