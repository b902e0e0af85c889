"""BM25 (Okapi, rank-bm25) over caption text, rebuilt in memory from the stored captions at open."""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
from rank_bm25 import BM25Okapi

_TOKEN = re.compile(r"[a-z0-9]+")
# A short English stop list: BM25's IDF already discounts common words, this only drops pure glue.
STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was were with".split()
)


def _stem(token: str) -> str:
    # Plural folding only ("dogs" → "dog", "boxes" → "box"); enough for catalog captions, no dependency.
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 4 and token.endswith(("ches", "shes", "xes", "sses")):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def tokenize(text: str) -> list[str]:
    return [_stem(t) for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS]


class LuceneBM25(BM25Okapi):
    """Okapi BM25 with Lucene's IDF, log(1 + (N - n + 0.5) / (n + 0.5)), which stays positive.

    rank-bm25's Okapi IDF goes negative for terms in more than half the documents, so in a small
    or uniform catalog the word you searched for can lower a caption's score.
    """

    def _calc_idf(self, nd: dict[str, int]) -> None:
        self.idf = {word: math.log(1.0 + (self.corpus_size - freq + 0.5) / (freq + 0.5)) for word, freq in nd.items()}


class BM25Index:
    """Scores every document for a query; `top` applies an allowed-id mask (metadata filters)."""

    def __init__(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        self.ids = list(ids)
        tokenized = [tokenize(t) for t in texts]
        # rank-bm25 divides by the mean document length: an empty corpus must not reach it.
        self._bm25 = LuceneBM25(tokenized) if any(tokenized) else None

    def top(self, query: str, k: int, allowed: set[str] | None = None, exclude: set[str] | None = None) -> list[tuple[str, float]]:
        terms = tokenize(query)
        if self._bm25 is None or not terms:
            return []
        scores = self._bm25.get_scores(terms)
        order = np.argsort(-scores, kind="stable")
        hits: list[tuple[str, float]] = []
        for i in order:
            if scores[i] <= 0 or len(hits) >= k:
                break
            doc_id = self.ids[i]
            if (allowed is not None and doc_id not in allowed) or (exclude and doc_id in exclude):
                continue
            hits.append((doc_id, float(scores[i])))
        return hits
