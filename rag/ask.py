"""Grounded answers (the G of RAG): retrieve as search does, show the top images to a VLM, stream a cited answer.

One question is one `AskTurn`: the search (the same engine call as `mmrag search`), the results sent as numbered
images with their captions (downscaled JPEGs, long side 512), and the answer, which cites results as [1], [2]...
A citation of a result that was not sent (or of no result at all) is flagged. A follow-up question refines the
previous turn: its search runs on the previous search text plus the follow-up, and the earlier questions and
answers go to the model as chat history. Only answered turns enter the history; an error is never kept as an
answer.
"""

from __future__ import annotations

import io
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock

from rag.errors import MmragError

LONG_SIDE = 512
JPEG_QUALITY = 85
NO_ENDPOINT = "no VLM endpoint configured (set MMRAG_VLM_BASE_URL and MMRAG_VLM_MODEL): showing the search results only"
SYSTEM_PROMPT = (
    "You answer questions about photos from a catalog. Each question comes with numbered photos, each with its "
    "catalog caption. Answer only from what the photos and captions show. Cite each photo you rely on by its number "
    "in square brackets, like [1] or [2][3]; use only the numbers given with the current question. If none of the "
    "photos answers the question, say so. Be brief."
)
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass
class Source:
    """One search result as the answer may cite it: number = its rank in the turn's results."""

    number: int
    id: str
    path: str
    caption: str
    sent: bool  # sent to the model as an image


@dataclass
class Citation:
    number: int
    sent: bool  # False: the answer cites a result the model never saw, or no result at all
    result_id: str | None = None

    @property
    def problem(self) -> str | None:
        if self.sent:
            return None
        if self.result_id is None:
            return f"the answer cites [{self.number}], which is not one of the results"
        return f"the answer cites [{self.number}], a result that was not sent to the model"


@dataclass
class AskTurn:
    question: str
    search_text: str  # what the search ran on (a follow-up: the previous search text + the question)
    response: Any = None  # the SearchResponse
    sources: list[Source] = field(default_factory=list)
    answer: str = ""
    citations: list[Citation] = field(default_factory=list)
    error: str | None = None
    answered: bool = False

    @property
    def sent(self) -> list[Source]:
        return [s for s in self.sources if s.sent]

    @property
    def flagged(self) -> list[Citation]:
        return [c for c in self.citations if not c.sent]

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "search_text": self.search_text,
                "search": self.response.to_dict() if self.response is not None else None,
                "sources": [asdict(s) for s in self.sources], "answer": self.answer if self.answered else None,
                "citations": [{"number": c.number, "sent": c.sent, "result_id": c.result_id, "problem": c.problem}
                              for c in self.citations],
                "error": self.error}


@dataclass
class Conversation:
    """Answered turns, oldest first: the context a follow-up refines."""

    turns: list[AskTurn] = field(default_factory=list)

    def search_text(self, question: str, follow_up: bool) -> str:
        previous = self.turns[-1].search_text if follow_up and self.turns else ""
        return f"{previous} {question}".strip()

    def history(self) -> list[ChatMessage]:
        """Earlier questions (with the captions they were shown) and answers, as text only."""
        out: list[ChatMessage] = []
        for turn in self.turns:
            listed = "\n".join(f"[{s.number}] {s.caption}" for s in turn.sent)
            out.append(ChatMessage(role=MessageRole.USER, content=f"{turn.question}\n(Photos shown then:\n{listed})"))
            out.append(ChatMessage(role=MessageRole.ASSISTANT, content=turn.answer))
        return out

    def add(self, turn: AskTurn) -> None:
        if turn.answered and not turn.error:
            self.turns.append(turn)

    def to_dict(self) -> dict[str, Any]:
        return {"turns": [{"question": t.question, "search_text": t.search_text, "answer": t.answer,
                           "sources": [asdict(s) for s in t.sources]} for t in self.turns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Conversation":
        try:
            turns = [AskTurn(t["question"], t["search_text"], sources=[Source(**s) for s in t["sources"]],
                             answer=t["answer"], answered=True) for t in data.get("turns", [])]
        except (KeyError, TypeError) as exc:
            raise MmragError(f"saved conversation is malformed ({type(exc).__name__}: {exc}): ask a new question") from None
        return cls(turns)


def parse_citations(text: str, sources: Sequence[Source]) -> list[Citation]:
    """Every distinct [n] (also [1, 2]) in the answer, in order of first use, checked against what was sent."""
    by_number = {s.number: s for s in sources}
    seen: list[int] = []
    for match in _CITATION.finditer(text):
        for number in (int(n) for n in match.group(1).split(",")):
            if number not in seen:
                seen.append(number)
    out = []
    for number in seen:
        source = by_number.get(number)
        out.append(Citation(number, bool(source and source.sent), source.id if source else None))
    return out


def downscaled_jpeg(path: str | Path, long_side: int = LONG_SIDE) -> bytes:
    """The image as RGB JPEG with its long side at most long_side (sent to the model; the catalog file is untouched)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((long_side, long_side))
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    except (OSError, UnidentifiedImageError) as exc:
        raise MmragError(f"cannot read result image {path}: {exc}") from None
    return buffer.getvalue()


def build_messages(turn: AskTurn, conversation: Conversation) -> list[ChatMessage]:
    """System prompt, the chat history, then the question with each sent result as [n] caption + image block."""
    blocks: list[Any] = [TextBlock(text=f"Question: {turn.question}")]
    if turn.response is not None and getattr(turn.response, "match", None) == "none":
        blocks.append(TextBlock(text="(The search found no good match for this question: these are only the nearest photos.)"))
    blocks.append(TextBlock(text="Photos for this question (cite them by these numbers):"))
    for source in turn.sent:
        blocks.append(TextBlock(text=f"[{source.number}] {source.caption or '(no caption)'}"))
        blocks.append(ImageBlock(image=downscaled_jpeg(source.path), image_mimetype="image/jpeg"))
    return [ChatMessage(role=MessageRole.SYSTEM, content=SYSTEM_PROMPT), *conversation.history(),
            ChatMessage(role=MessageRole.USER, blocks=blocks)]


class Asker:
    """Search with the engine, then (when an LLM is configured) stream the model's grounded answer."""

    def __init__(self, engine: Any, llm: Any | None, images: int = 5) -> None:
        self.engine = engine
        self.llm = llm  # a LlamaIndex LLM with vision (rag.vision_llm.VisionChatLLM); None: search results only
        self.images = images

    def search(self, question: str, conversation: Conversation, *, follow_up: bool = False, mode: str = "hybrid",
               k: int = 10, filters: dict[str, Any] | None = None) -> AskTurn:
        if not question or not question.strip():
            raise MmragError("empty question")
        if follow_up and not conversation.turns:
            raise MmragError("no earlier answered question to follow up: ask one first")
        turn = AskTurn(question.strip(), conversation.search_text(question.strip(), follow_up))
        turn.response = self.engine.search(turn.search_text, mode=mode, k=max(k, self.images), filters=filters)
        turn.sources = [Source(r.rank, r.id, r.path, r.caption, r.rank <= self.images) for r in turn.response.results]
        return turn

    def stream(self, turn: AskTurn, conversation: Conversation) -> Iterator[str]:
        """Answer text as it arrives; at the end the turn holds the answer and citations and joins the conversation.

        An endpoint failure raises its one-line error (VLMUnavailableError) with turn.error set and nothing kept.
        """
        if self.llm is None:
            turn.error = NO_ENDPOINT
            return
        if not turn.sent:
            turn.error = "nothing to answer from: the search returned no results"
            return
        try:
            messages = build_messages(turn, conversation)
            text = ""
            for chunk in self.llm.stream_chat(messages):
                delta = chunk.delta or ""
                text += delta
                yield delta
        except MmragError as exc:
            turn.error = str(exc)
            raise
        turn.answer, turn.answered = text, True
        turn.citations = parse_citations(text, turn.sources)
        conversation.add(turn)
