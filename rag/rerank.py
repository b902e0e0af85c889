"""Second-stage reranking of a fused result list.

1. Cross-modal: re-score the fused top-K by the cosine between the query's CLIP text vector and each
   result's CLIP image vector (the fused list decides *which* K candidates, CLIP decides their order).
2. Optional VLM judgement: ask an OpenAI-compatible VLM "does this image show <query>?" for the
   first few candidates and move "yes" answers ahead of "no" answers (order inside each group kept).

Results after position K keep their fused order. Each reranked result carries its fused rank and
rerank score in metadata ("fused_rank", "rerank_score", "vlm_judgement").
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from rag.errors import MmragError

log = logging.getLogger(__name__)

VLM_PROMPT = (
    "Does this image show the following? {query}\n"
    "Answer with exactly one word: yes or no."
)
_YES = re.compile(r"^\W*(yes|yeah|yep|true)\b", re.IGNORECASE)
_NO = re.compile(r"^\W*(no|nope|false)\b", re.IGNORECASE)


class _ClipLike(Protocol):
    def get_text_embedding(self, text: str) -> list[float]: ...
    def get_image_embeddings(self, images: list[Any]) -> list[list[float]]: ...


class _VLMLike(Protocol):
    def chat_image(self, image: Any, prompt: str) -> str: ...


def parse_yes_no(answer: str) -> bool | None:
    """'Yes.' -> True, 'no, it shows a dog' -> False, anything else -> None."""
    text = answer.strip()
    if _YES.match(text):
        return True
    if _NO.match(text):
        return False
    return None


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


class Reranker:
    """Reorders the head of a SearchResponse-like result list; image vectors are cached by result id."""

    def __init__(
        self,
        clip: _ClipLike | None,
        *,
        top_k: int = 20,
        vlm: _VLMLike | None = None,
        vlm_top_k: int = 5,
        image_vectors: Callable[[Sequence[Any]], np.ndarray | None] | None = None,
    ) -> None:
        if clip is None and vlm is None:
            raise MmragError("reranking needs CLIP weights (cross-modal rescoring) or a configured VLM")
        if top_k < 1 or vlm_top_k < 0:
            raise ValueError("top_k must be >= 1 and vlm_top_k >= 0")
        self.clip = clip
        self.top_k = top_k
        self.vlm = vlm
        self.vlm_top_k = vlm_top_k
        self._lookup = image_vectors  # e.g. vectors already stored in Milvus; None -> encode images
        self._cache: dict[str, np.ndarray] = {}

    def _image_matrix(self, results: Sequence[Any]) -> np.ndarray:
        missing = [r for r in results if r.id not in self._cache]
        if missing:
            found = self._lookup(missing) if self._lookup is not None else None
            if found is None:
                found = np.asarray(self.clip.get_image_embeddings([Path(r.path) for r in missing]), dtype=np.float32)
            for r, vec in zip(missing, np.asarray(found, dtype=np.float32)):
                self._cache[r.id] = vec
        return _unit(np.stack([self._cache[r.id] for r in results]))

    def clip_scores(self, query: str, results: Sequence[Any]) -> np.ndarray:
        """Cosine of the query's CLIP text vector with each result's CLIP image vector."""
        text = _unit(np.asarray(self.clip.get_text_embedding(query), dtype=np.float32))
        return self._image_matrix(results) @ text

    def judge(self, query: str, result: Any) -> bool | None:
        try:
            answer = self.vlm.chat_image(result.path, VLM_PROMPT.format(query=query))
        except MmragError as exc:  # one failed call should not lose the whole ranking
            log.warning("VLM judgement failed for %s: %s", result.path, exc)
            return None
        return parse_yes_no(answer)

    def rerank(self, query: str, results: Sequence[Any]) -> list[Any]:
        """Return new result objects: head reordered, ranks renumbered 1..n, tail untouched."""
        if not query or not query.strip():
            raise MmragError("reranking needs the query text")
        head, tail = list(results[: self.top_k]), list(results[self.top_k :])
        if not head:
            return []
        meta: dict[str, dict[str, Any]] = {r.id: {"fused_rank": r.rank} for r in head}
        if self.clip is not None:
            scores = self.clip_scores(query, head)
            order = np.argsort(-scores, kind="stable")
            for r, s in zip(head, scores):
                meta[r.id]["rerank_score"] = float(s)
            head = [head[i] for i in order]
        if self.vlm is not None and self.vlm_top_k:
            judged = head[: self.vlm_top_k]
            verdicts = {r.id: self.judge(query, r) for r in judged}
            for r in judged:
                meta[r.id]["vlm_judgement"] = verdicts[r.id]
            rank_of = {True: 0, None: 1, False: 2}
            head = sorted(judged, key=lambda r: rank_of[verdicts[r.id]]) + head[self.vlm_top_k :]
        out = []
        for i, r in enumerate(head + tail, 1):
            extra = meta.get(r.id)
            score = extra.get("rerank_score", r.score) if extra else r.score
            metadata = {**(r.metadata or {}), **extra} if extra else r.metadata
            out.append(replace(r, rank=i, score=score, metadata=metadata))
        return out

    @classmethod
    def for_engine(cls, engine: Any, *, top_k: int = 20, vlm: _VLMLike | None = None, vlm_top_k: int = 5) -> "Reranker":
        """A reranker on a SearchEngine's CLIP model, reading image vectors from its store (no re-encoding)."""
        return cls(engine.clip, top_k=top_k, vlm=vlm, vlm_top_k=vlm_top_k, image_vectors=store_vector_lookup(engine))

    def rerank_response(self, response: Any) -> Any:
        """Rerank a SearchResponse in place of its results; its mode becomes '<mode>+rerank'."""
        return replace(response, results=self.rerank(response.query, response.results), mode=f"{response.mode}+rerank")


def store_vector_lookup(engine: Any) -> Callable[[Sequence[Any]], np.ndarray | None] | None:
    """Fetch stored CLIP image vectors by result id from a SearchEngine's CatalogStore (None if unavailable)."""
    store = getattr(engine, "store", None)
    if store is None or "clip" not in {c.name for c in getattr(store, "channels", [])}:
        return None

    def lookup(results: Sequence[Any]) -> np.ndarray | None:
        found = store.vectors("clip", [r.id for r in results])
        if any(r.id not in found for r in results):
            return None  # not indexed with CLIP: encode the images instead
        return np.asarray([found[r.id] for r in results], dtype=np.float32)

    return lookup
