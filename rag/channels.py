"""Retrieval channels, declared once.

A channel is one way to find an image: its name, how an indexed image becomes its Milvus field, how a query
becomes a vector or text, and which field it searches. The store builds its schema from the channels, ingest
encodes each one, search runs one retriever per channel, fusion, the JSON `ranks`, the app and eval iterate
over them. Adding a channel is one `Channel(...)` plus its index-time source (see `register`).

Kinds:
- "dense": `encoder` ("clip" or "text") embeds the index-time source and the query; searched by COSINE.
- "bm25": the index-time source is text, tokenised by rag.bm25.tokenize into `{name}_text`; Milvus' BM25
  Function fills the sparse field where the server has it, else the store scores it client-side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from rag.errors import MmragError

DENSE, BM25 = "dense", "bm25"
ENCODERS = ("clip", "text")


@dataclass
class IndexItem:
    """What ingest knows about one image when it writes its row."""

    id: str
    path: str
    image: Any  # PIL.Image (the CLIP channel's source)
    caption: str
    sources: dict[str, str] = field(default_factory=dict)  # caption provenance: metadata / vlm / ocr / filename -> text
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryPart:
    """One term of a (possibly composite) query: text or an image, with a weight (< 0 = exclude)."""

    text: str | None = None
    image: str | None = None  # path of a query image
    weight: float = 1.0
    image_caption: str | None = None  # the stored caption when the query image is a catalog image

    @property
    def negative(self) -> bool:
        return self.weight < 0


def _text_of(part: QueryPart) -> str | None:
    # A catalog image used as a query is described to the text channels by its stored caption.
    return part.text or part.image_caption or None


def _clip_query(part: QueryPart) -> Any:
    return Path(part.image) if part.image else (part.text or None)


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str  # DENSE | BM25
    index_source: Callable[[IndexItem], Any]
    query_source: Callable[[QueryPart], Any] = _text_of  # None: this part says nothing to the channel
    encoder: str | None = None  # dense channels: "clip" | "text"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name == "hybrid":
            raise MmragError(f"channel name {self.name!r} must be an identifier other than 'hybrid'")
        if self.kind not in (DENSE, BM25):
            raise MmragError(f"channel {self.name}: kind must be {DENSE!r} or {BM25!r}")
        if (self.kind == DENSE) != (self.encoder in ENCODERS):
            raise MmragError(f"channel {self.name}: a dense channel needs encoder 'clip' or 'text', a bm25 channel none")

    @property
    def field(self) -> str:
        """The Milvus field searched."""
        return f"{self.name}_vector" if self.kind == DENSE else f"{self.name}_sparse"

    @property
    def text_field(self) -> str | None:
        """BM25 channels: the VARCHAR (tokenised text) the BM25 function reads."""
        return f"{self.name}_text" if self.kind == BM25 else None


CHANNELS: dict[str, Channel] = {}


def register(channel: Channel) -> Channel:
    """Declare a channel for every store, ingest run and search built after this call."""
    CHANNELS[channel.name] = channel
    return channel


def unregister(name: str) -> None:
    CHANNELS.pop(name, None)


def declared(names: Iterable[str] | None = None) -> list[Channel]:
    """The declared channels (all, or those named, in declaration order)."""
    if names is None:
        return list(CHANNELS.values())
    wanted = set(names)
    return [c for c in CHANNELS.values() if c.name in wanted]


register(Channel("clip", DENSE, index_source=lambda item: item.image, query_source=_clip_query, encoder="clip",
                 description="CLIP image vector; text or image queries"))
register(Channel("caption", DENSE, index_source=lambda item: item.caption, encoder="text",
                 description="caption text vector"))
register(Channel("bm25", BM25, index_source=lambda item: item.caption, description="BM25 over the caption text"))
# Text read inside the image on its own, since that is where CLIP is weakest (empty unless indexed with --captioner ocr).
register(Channel("ocr", BM25, index_source=lambda item: item.sources.get("ocr", ""),
                 description="BM25 over OCR text found in the image"))
