"""The models behind the dense channels: "clip" (image and text) and "text" (caption text), loaded once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rag.clip_embedding import ClipEmbedding, load_clip
from rag.config import Settings
from rag.errors import MmragError
from rag.text_embedding import embedder_dim, make_text_embedder


@dataclass
class Encoders:
    clip: ClipEmbedding | None
    text: Any  # a LlamaIndex BaseEmbedding with .dim and .model_name

    @classmethod
    def load(cls, settings: Settings, *, clip: ClipEmbedding | None = None, text: Any = None) -> "Encoders":
        """The settings' models, unless passed in (the app and eval share loaded ones)."""
        if clip is None and settings.clip_model:
            clip = load_clip(settings.clip_model, batch_size=settings.batch_size, dtype=settings.clip_dtype)
        text = text or make_text_embedder(settings.text_model, openai_api_key=settings.openai_api_key,
                                          cache_dir=settings.data_dir / "models")
        return cls(clip, text)

    def has(self, encoder: str | None) -> bool:
        return encoder is None or (encoder == "clip" and self.clip is not None) or encoder == "text"

    @property
    def dims(self) -> dict[str, int]:
        out = {"text": embedder_dim(self.text)}
        if self.clip is not None:
            out["clip"] = self.clip.dim
        return out

    @property
    def models(self) -> dict[str, str | None]:
        return {"clip_model": self.clip.model_id if self.clip else None, "text_model": self.text.model_name}

    def index_batch(self, encoder: str, values: Sequence[Any]) -> list[list[float]]:
        """Index-time vectors: images for "clip", caption texts for "text"."""
        if encoder == "clip":
            return self._need_clip().get_image_embedding_batch(list(values))
        return self.text.get_text_embedding_batch([v or " " for v in values])

    def index_batch_isolated(self, encoder: str, values: Sequence[Any]) -> tuple[list[Any], dict[int, str]]:
        """Like index_batch, but an item that fails gets None and a reason (by index); the others still get vectors."""
        if encoder == "clip":
            result = self._need_clip().embed_images_isolated(list(values))
            return list(result.vectors), dict(result.errors)
        try:
            return self.index_batch(encoder, values), {}
        except (ValueError, RuntimeError, MemoryError):
            vectors: list[Any] = []
            errors: dict[int, str] = {}
            for i, value in enumerate(values):
                try:
                    vectors.append(self.index_batch(encoder, [value])[0])
                except (ValueError, RuntimeError, MemoryError) as exc:
                    vectors.append(None)
                    errors[i] = f"{encoder} embedding failed ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
            return vectors, errors

    def query(self, encoder: str, value: Any) -> list[float] | None:
        """A query-side vector: for "clip" a Path (image) or text, for "text" text only (None otherwise)."""
        if value is None:
            return None
        if encoder == "clip":
            clip = self._need_clip()
            return clip.get_image_embedding(value) if isinstance(value, Path) else clip.get_query_embedding(str(value))
        return self.text.get_query_embedding(str(value)) if isinstance(value, str) else None

    def _need_clip(self) -> ClipEmbedding:
        if self.clip is None:
            raise MmragError("this needs a CLIP model: pass --clip-model ID_OR_DIR")
        return self.clip


def combine(vectors: list[tuple[float, list[float]]]) -> list[float] | None:
    """Normalised weighted sum of unit vectors (negative weights subtract); None without a positive part."""
    if not any(w > 0 for w, _ in vectors):
        return None
    total = np.zeros(len(vectors[0][1]), dtype=np.float64)
    for weight, vector in vectors:
        v = np.asarray(vector, dtype=np.float64)
        total += weight * v / (np.linalg.norm(v) or 1.0)
    norm = np.linalg.norm(total)
    if norm == 0:
        return None
    return (total / norm).tolist()
