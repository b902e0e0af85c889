"""One catalog record per image, and the single LlamaIndex node built from it.

RRF in QueryFusionRetriever merges results by node hash, so every retriever must return the
identical node for one image: all of them build it here, from the same record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llama_index.core.schema import TextNode

Scalar = str | int | float | bool


@dataclass(frozen=True)
class CatalogRecord:
    id: str  # sha256 of the image bytes
    path: str
    caption: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def node(self) -> TextNode:
        return TextNode(id_=self.id, text=self.caption, metadata={"path": self.path, **self.metadata})


def filter_matches(metadata: dict[str, Any], filters: dict[str, Scalar]) -> bool:
    return all(metadata.get(key) == value for key, value in filters.items())
