"""The two Milvus collections (image vectors, caption vectors) behind LlamaIndex MilvusVectorStore.

Embedded Milvus Lite (a local `.db` folder) by default, a Milvus server for an http:// URI.
Rows are keyed by the image's content hash and written with upsert, so a re-run or a resumed
run can never duplicate an image.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from typing import Any, Iterable, Iterator, Sequence

from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import ExactMatchFilter, MetadataFilters, VectorStoreQuery

from rag.catalog import CatalogRecord
from rag.config import Settings
from rag.errors import StoreUnavailableError
from rag.index_params import index_params_for, is_milvus_lite

log = logging.getLogger(__name__)

class _NoTimestampServiceNoise(logging.Filter):
    """Milvus Lite has no timestamp service: query_iterator falls back to a client-side timestamp, and both
    pymilvus and the in-process gRPC server log that expected miss loudly (with a traceback). Drop just those."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("mvccTs" in text or "Method not implemented" in text or "AllocTimestamp" in text)


for _name in ("grpc._server", "pymilvus.orm.iterator"):
    logging.getLogger(_name).addFilter(_NoTimestampServiceNoise())

# Fields LlamaIndex adds to every row that are not catalog metadata.
_INTERNAL_KEYS = {"_node_content", "_node_type", "doc_id", "document_id", "ref_doc_id", "embedding", "text", "id"}
MODEL_KEYS = ("clip_model", "text_model")
_PAGE = 1000


def _index_configs(n_vectors: int, client: Any) -> tuple[dict, dict]:
    # Milvus Lite (embedded or `milvus-lite server`) gets its own FLAT/HNSW threshold; see bench/RESULTS.md.
    return index_params_for(n_vectors, metric="COSINE", server=not is_milvus_lite(client))


def _open_error(settings: Settings, exc: Exception) -> StoreUnavailableError:
    reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    reason = str(reason).splitlines()[0][:200]
    return StoreUnavailableError(f"cannot open Milvus at {settings.store_uri}: {reason}")


# Milvus Lite runs one in-process server per .db folder, holding the folder's lock until released.
# Count this process's users of each folder so the last close releases the lock for other processes.
_embedded_users: dict[str, int] = {}


def _acquire_embedded(uri: str) -> None:
    path = os.path.abspath(uri)
    if _embedded_users.get(path, 0) == 0 and _locked_elsewhere(path):
        raise StoreUnavailableError(
            f"Milvus Lite folder {uri} is in use by another process (one process at a time): wait for it, or serve "
            "the folder with `milvus-lite server --host 127.0.0.1 --port 19530 --data-dir FOLDER` and pass --uri http://127.0.0.1:19530"
        )
    _embedded_users[path] = _embedded_users.get(path, 0) + 1


def _release_embedded(uri: str) -> None:
    path = os.path.abspath(uri)
    _embedded_users[path] = _embedded_users.get(path, 1) - 1
    if _embedded_users[path] <= 0:
        _embedded_users.pop(path, None)
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


def _locked_elsewhere(path: str) -> bool:
    lock_file = os.path.join(path, "LOCK")
    if not os.path.exists(lock_file):
        return False
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


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
            os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
            _acquire_embedded(uri)
        self._released = False
        try:
            probe = MilvusClient(uri=uri, token=settings.token, timeout=10)
            existing = set(probe.list_collections())
            for name in existing & {settings.caption_collection, settings.image_collection}:
                probe.load_collection(name)  # Milvus Lite 3 reopens collections released
            n_rows = 0
            if settings.caption_collection in existing:
                n_rows = int(probe.get_collection_stats(settings.caption_collection).get("row_count", 0))
            # The index type is fixed when a collection is created: size it for what is about to be indexed.
            index_config, search_config = _index_configs(max(n_rows, expected_rows), probe)

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
        except Exception as exc:  # grpc, milvus-lite, bad URI
            if settings.is_embedded:
                _release_embedded(uri)
            if isinstance(exc, StoreUnavailableError):
                raise
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
        iterator = self._client.query_iterator(name, batch_size=_PAGE, filter="", output_fields=fields)
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

    @staticmethod
    def peek_models(settings: Settings) -> dict[str, str | None] | None:
        """The models an existing index was built with ({} when empty, None when there is no index)."""
        store = CatalogStore(settings, image_dim=None, text_dim=None, create=False)
        try:
            if settings.caption_collection not in store.client.list_collections():
                return None
            return store.stored_models()
        finally:
            store.close()

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
        # Ids and scores are all the retrievers use: don't ship every vector and node JSON back (9.0 -> 4.1 ms).
        result = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=top_k, filters=metadata_filters,
                                              output_fields=["id"]))
        return list(zip(result.ids or [], result.similarities or []))

    def image_vectors(self, ids: Iterable[str]) -> dict[str, list[float]]:
        ids = list(ids)
        if self.image is None or not ids:
            return {}
        rows = self._client.get(self.settings.image_collection, ids=ids, output_fields=["id", "embedding"])
        return {row["id"]: list(row["embedding"]) for row in rows}

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
        if self.settings.is_embedded and not self._released:
            self._released = True
            _release_embedded(self.settings.store_uri)


def _node(record: CatalogRecord, vector: list[float]) -> TextNode:
    node = record.node()
    node.embedding = list(vector)
    return node
