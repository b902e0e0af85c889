"""The two Milvus collections (image vectors, caption vectors) behind LlamaIndex MilvusVectorStore.

Embedded Milvus Lite (a local `.db` folder) by default, a Milvus server for an http:// URI.
Rows are keyed by the image's content hash and written with upsert, so a re-run or a resumed
run can never duplicate an image.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable, Iterator, Sequence

from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import ExactMatchFilter, MetadataFilters, VectorStoreQuery

from rag.catalog import CatalogRecord
from rag.config import Settings
from rag.errors import StoreUnavailableError

log = logging.getLogger(__name__)

# Fields LlamaIndex adds to every row that are not catalog metadata.
_INTERNAL_KEYS = {"_node_content", "_node_type", "doc_id", "document_id", "ref_doc_id", "embedding", "text", "id"}
MODEL_KEYS = ("clip_model", "text_model")
_PAGE = 1000


def _index_configs(n_vectors: int, server: bool) -> tuple[dict | None, dict | None]:
    try:
        from rag.index_params import index_params_for
    except ImportError:
        return None, None
    return index_params_for(n_vectors, metric="COSINE", server=server)


def _open_error(settings: Settings, exc: Exception) -> StoreUnavailableError:
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if settings.is_embedded and ("lock" in reason.lower() or "LOCK" in reason):
        return StoreUnavailableError(
            f"Milvus Lite folder {settings.store_uri} is in use by another process (one process at a time): "
            f"stop it, or serve the folder with `milvus-lite server --host 127.0.0.1` and pass --uri http://127.0.0.1:PORT"
        )
    return StoreUnavailableError(f"cannot open Milvus at {settings.store_uri}: {reason}")


class CatalogStore:
    """Image and caption collections of one catalog; either can be absent (caption-side only, or read-only open)."""

    def __init__(self, settings: Settings, *, image_dim: int | None, text_dim: int | None, create: bool = True,
                 expected_rows: int = 0) -> None:
        from llama_index.vector_stores.milvus import MilvusVectorStore
        from pymilvus import MilvusClient

        self.settings = settings
        self.image: Any = None
        self.caption: Any = None
        uri = settings.store_uri
        if settings.is_embedded:
            from pathlib import Path

            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            probe = MilvusClient(uri=uri, token=settings.token, timeout=10)
            existing = set(probe.list_collections())
            n_rows = 0
            if settings.caption_collection in existing:
                n_rows = int(probe.get_collection_stats(settings.caption_collection).get("row_count", 0))
            # The index type is fixed when a collection is created: size it for what is about to be indexed.
            index_config, search_config = _index_configs(max(n_rows, expected_rows), server=not settings.is_embedded)

            def open_store(name: str, dim: int | None) -> Any:
                if dim is None or (not create and name not in existing):
                    return None
                if name in existing:
                    self._check_dim(probe, name, dim)
                return MilvusVectorStore(
                    uri=uri, token=settings.token, collection_name=name, dim=dim, similarity_metric="COSINE",
                    upsert_mode=True, use_async_client=False, consistency_level="Strong",
                    index_config=index_config, search_config=search_config,
                )

            self.caption = open_store(settings.caption_collection, text_dim)
            self.image = open_store(settings.image_collection, image_dim)
        except StoreUnavailableError:
            raise
        except Exception as exc:  # grpc, milvus-lite lock, bad URI
            raise _open_error(settings, exc) from exc
        self._client = probe

    @staticmethod
    def _check_dim(client: Any, name: str, dim: int) -> None:
        for field in client.describe_collection(name)["fields"]:
            stored = field.get("params", {}).get("dim")
            if stored is not None and int(stored) != dim:
                raise StoreUnavailableError(
                    f"collection {name} holds {stored}-d vectors but the configured model makes {dim}-d ones: "
                    "index into another --data-dir/--collection-prefix, or use the model the index was built with"
                )

    @property
    def client(self) -> Any:
        return self._client

    def _scan(self, name: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every row of a collection, page by page (query_iterator has no row limit)."""
        pymilvus_log = logging.getLogger("pymilvus")
        level = pymilvus_log.level
        pymilvus_log.setLevel(logging.ERROR)  # Milvus Lite has no mvcc timestamp; the iterator warns each time
        try:
            iterator = self._client.query_iterator(name, batch_size=_PAGE, filter="", output_fields=fields)
        finally:
            pymilvus_log.setLevel(level)
        try:
            while rows := iterator.next():
                yield from rows
        finally:
            iterator.close()

    def _ids(self, name: str) -> set[str]:
        if name not in self._client.list_collections():
            return set()
        return {row["id"] for row in self._scan(name, ["id"])}

    def image_ids(self) -> set[str]:
        return self._ids(self.settings.image_collection) if self.image is not None else set()

    def caption_ids(self) -> set[str]:
        return self._ids(self.settings.caption_collection)

    def stored_models(self) -> dict[str, str | None]:
        """The model ids recorded on the rows (an index is tied to the models that embedded it)."""
        name = self.settings.caption_collection
        if name not in self._client.list_collections():
            return {}
        rows = self._client.query(name, filter="", output_fields=list(MODEL_KEYS), limit=1)
        return {key: rows[0].get(key) for key in MODEL_KEYS} if rows else {}

    def upsert(self, records: Sequence[CatalogRecord], text_vectors: Sequence[list[float]],
               image_vectors: Sequence[list[float]] | None) -> None:
        """Write both rows of each record, image first: a record counts as indexed once its caption row exists."""
        if image_vectors is not None and self.image is not None:
            self.image.add([_node(r, v) for r, v in zip(records, image_vectors)])
            self._client.flush(self.settings.image_collection)
        self.caption.add([_node(r, v) for r, v in zip(records, text_vectors)])
        self._client.flush(self.settings.caption_collection)

    def load_catalog(self) -> dict[str, CatalogRecord]:
        """Every record, read back from the caption collection (the source of truth for captions and metadata)."""
        name = self.settings.caption_collection
        if name not in self._client.list_collections():
            return {}
        catalog: dict[str, CatalogRecord] = {}
        for row in self._scan(name, ["id", "text", "_node_content"]):
            content = json.loads(row["_node_content"])
            metadata = {k: v for k, v in content.get("metadata", {}).items() if k not in _INTERNAL_KEYS}
            path = str(metadata.pop("path", ""))
            catalog[row["id"]] = CatalogRecord(id=row["id"], path=path, caption=row["text"], metadata=metadata)
        return catalog

    def search(self, which: str, vector: list[float], top_k: int, filters: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        """(id, cosine similarity) pairs, best first."""
        store = self.image if which == "image" else self.caption
        metadata_filters = (
            MetadataFilters(filters=[ExactMatchFilter(key=k, value=v) for k, v in filters.items()]) if filters else None
        )
        result = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=top_k, filters=metadata_filters))
        return list(zip(result.ids or [], result.similarities or []))

    def image_vectors(self, ids: Iterable[str]) -> dict[str, list[float]]:
        ids = list(ids)
        if self.image is None or not ids:
            return {}
        rows = self._client.get(self.settings.image_collection, ids=ids, output_fields=["id", "embedding"])
        return {row["id"]: list(row["embedding"]) for row in rows}

    def counts(self) -> dict[str, int]:
        names = set(self._client.list_collections())
        return {
            which: len(self._ids(name)) if name in names else 0
            for which, name in (("image", self.settings.image_collection), ("caption", self.settings.caption_collection))
        }

    def close(self) -> None:
        for store in (self.image, self.caption):
            if store is not None:
                try:
                    store.client.close()
                except Exception:  # closing twice or a dead server must not mask the real outcome
                    pass
        try:
            self._client.close()
        except Exception:
            pass


def _node(record: CatalogRecord, vector: list[float]) -> TextNode:
    node = record.node()
    node.embedding = list(vector)
    return node
