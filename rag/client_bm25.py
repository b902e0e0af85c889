"""BM25 scored in this process, for servers without Milvus' BM25 Function (Milvus 2.3 and 2.4).

The store keeps each BM25 channel's tokenised text in its collection either way; here a channel's texts are read
once per process at its first query (and again after this process writes), then scored by rag/bm25.py. The cost
is one slow first query and the texts in memory (4.2 s and +185 MB at 100k images on 2.3; bench/RESULTS.md).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Sequence

from rag.bm25 import BM25Index

log = logging.getLogger(__name__)

class ClientBM25:
    """Per-channel BM25Index over the texts read_texts(channel name) returns as (id, text) pairs."""

    def __init__(self, server_label: str, read_texts: Callable[[str], Iterable[tuple[str, str]]]) -> None:
        self.server_label = server_label
        self._read_texts = read_texts
        self._indexes: dict[str, BM25Index] = {}

    def top(self, channel: str, terms: str, k: int, allowed: set[str] | None = None,
            exclude: Sequence[Sequence[frozenset[str]]] = ()) -> list[tuple[str, float]]:
        """Best k (id, score) of one channel; allowed: ids passing the query's filter (None: no filter)."""
        index = self._indexes.get(channel)
        if index is None:
            if not self._indexes:
                log.warning("%s has no BM25 function: BM25 channels are scored in this process (texts read once); "
                            "Milvus 2.5+ or Milvus Lite score them in the server", self.server_label)
            pairs = list(self._read_texts(channel))
            index = self._indexes[channel] = BM25Index([i for i, _ in pairs], [t for _, t in pairs])
        return index.top(terms, k, allowed=allowed, exclude_groups=exclude)

    def invalidate(self) -> None:
        """This process wrote or deleted rows: read the texts again at the next query."""
        self._indexes.clear()
