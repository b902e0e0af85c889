"""Chat history of the search tab: one Turn per query, kept in the Streamlit session."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rag.channels import QueryPart
from rag.query_parser import Negation, format_query
from rag.search import SearchResult

RETRIEVER_LABELS = {"clip": "CLIP", "caption": "caption", "bm25": "BM25", "ocr": "OCR"}
_turn_ids = itertools.count(1)


@dataclass
class ResultCard(SearchResult):
    """What one thumbnail shows: a SearchResult (rank, fused score, each retriever's rank, caption, fields)."""

    @classmethod
    def from_result(cls, result: Any) -> "ResultCard":
        """From a SearchResult or its to_dict() form."""
        get = result.get if isinstance(result, Mapping) else lambda name, default=None: getattr(result, name, default)
        return cls(
            id=str(get("id")),
            path=str(get("path")),
            score=float(get("score", 0.0) or 0.0),
            rank=int(get("rank", 0) or 0),
            ranks=dict(get("ranks", {}) or {}),
            caption=str(get("caption", "") or ""),
            metadata=dict(get("metadata", {}) or {}),
            matched_terms=list(get("matched_terms", []) or []),
            scores=dict(get("scores", {}) or {}),
            match=get("match"),
        )

    def ranks_text(self, retrievers: Iterable[str] | None = None) -> str:
        """'CLIP 3 · caption 1 · BM25 —' (— = not in that channel's list); default: the channels the result names."""
        parts = []
        for name in retrievers if retrievers is not None else (self.ranks or RETRIEVER_LABELS):
            rank = self.ranks.get(name)
            parts.append(f"{RETRIEVER_LABELS.get(name, name)} {rank if rank is not None else '—'}")
        return " · ".join(parts)


@dataclass
class Turn:
    """One query and its answer (results, or the one-line error that replaced them)."""

    text: str | None
    image_path: str | None
    mode: str
    k: int
    filters: dict[str, str]
    results: list[ResultCard] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    parts: list[QueryPart] = field(default_factory=list)  # the query as searched (parsed, or edited chips)
    negations: list[Negation] = field(default_factory=list)
    match: str | None = None  # the query's "good" | "weak" | "none" (rag/match.py); None: not calibrated
    ask: Any = None  # an Ask turn: rag.ask.AskTurn (the question, the sources sent, the answer or its error)
    ask_pending: bool = False  # the answer is still to be streamed (on the next render)
    id: int = field(default_factory=lambda: next(_turn_ids))
    created: float = field(default_factory=time.time)

    @property
    def title(self) -> str:
        """The user's side of the turn as one line."""
        pieces = []
        if self.image_path:
            pieces.append("🖼 image query")
        if self.text:
            pieces.append(self.text)
        elif self.parts and not self.image_path:
            pieces.append(format_query(self.parts))
        return " + ".join(pieces) or "(empty query)"

    @property
    def summary(self) -> str:
        """The assistant's header line: count, mode, filters and total time."""
        if self.error:
            return self.error
        total = self.timings_ms.get("total", sum(self.timings_ms.values()))
        where = f" where {', '.join(f'{k}={v}' for k, v in self.filters.items())}" if self.filters else ""
        return f"{len(self.results)} results · {self.mode}{where} · {total:.0f} ms"


class History:
    """Turns in order, oldest first, capped at max_turns (the oldest are dropped)."""

    def __init__(self, max_turns: int = 30) -> None:
        self.max_turns = max_turns
        self.turns: list[Turn] = []

    def add(self, turn: Turn) -> Turn:
        self.turns.append(turn)
        del self.turns[: max(0, len(self.turns) - self.max_turns)]
        return turn

    def clear(self) -> None:
        self.turns.clear()

    def __len__(self) -> int:
        return len(self.turns)

    def __iter__(self):
        return iter(self.turns)

    @property
    def last(self) -> Turn | None:
        return self.turns[-1] if self.turns else None
