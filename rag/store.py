"""The catalog in Milvus: the system of record for everything a query needs.

One collection, `{prefix}_catalog`, holds per image its id (content hash), path, caption, pending flag,
metadata (dynamic fields) and one field per channel (rag/channels.py): dense vectors, and for BM25 channels
the tokenised text plus the sparse vector Milvus' BM25 Function fills from it. A second small collection,
`{prefix}_info`, records the models, channels and metadata field types, so opening a store reads no catalog
rows. Search returns ids and scores only; fields are fetched for the ids a query returns.

Why pymilvus' MilvusClient and not LlamaIndex's MilvusVectorStore: the store holds several dense fields and
BM25 sparse fields in one collection (what Milvus' hybrid_search fuses over); MilvusVectorStore manages one
dense field (plus one sparse) per collection.

Servers without several vector fields per collection (Milvus 2.3) get one collection per dense channel
(`{prefix}_{channel}`, each with the scalar fields); servers without the BM25 Function (2.3, 2.4) keep the
tokenised text and score BM25 in this process (rag/client_bm25.py), reading the texts once at first use.
Both are said in one line when the store opens.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from rag import embedded_lock
from rag.bm25 import tokenize
from rag.channels import BM25, DENSE, Channel, IndexItem, declared
from rag.client_bm25 import ClientBM25
from rag.config import Settings
from rag.errors import MmragError, StoreUnavailableError
from rag.index_params import index_params_for, search_config_for_k
from rag.milvus_caps import Capabilities, detect
from rag.milvus_filters import FIELD_NAME, Filter, build_filter, exclusion_filter, ids_filter, type_name

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
ID, PATH, CAPTION, PENDING = "id", "path", "caption", "caption_pending"
SCALARS = (ID, PATH, CAPTION, PENDING)
MAX_VARCHAR = 65_535
MAX_TEXT_CHARS = MAX_VARCHAR // 4  # VARCHAR limits count bytes; UTF-8 is at most 4 per character
MAX_LIMIT = 16_384
# Search-path reads: the client's own writes are seen, without waiting for the server's next time tick as a
# Strong read does (200-400 ms per read on Milvus 2.3; bench/RESULTS.md). Index-time checks stay Strong.
READ = {"consistency_level": "Session"}
# rank-bm25's Okapi defaults, which rag/bm25.py uses (a Milvus server defaults to k1=1.2).
BM25_PARAMS = {"bm25_k1": 1.5, "bm25_b": 0.75}
# The text is stored as rag.bm25 tokens ([a-z0-9]+, space-separated): the standard analyzer splits it back into
# exactly those tokens, so Milvus and rank-bm25 score the same terms.
BM25_ANALYZER = {"tokenizer": "standard"}
# Rows per page when the client-side BM25 fallback reads texts: the largest page Milvus serves. 1,000-row pages
# made the first BM25 query on Milvus 2.3 at 100k take 22 s, 16,384-row pages 4.2 s (bench/store_scale.py).
_PAGE = MAX_LIMIT


class _NoTimestampServiceNoise(logging.Filter):
    """Milvus Lite has no timestamp service; pymilvus and the in-process gRPC server log that expected miss
    loudly (with a traceback) when an iterator starts. Drop just those lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("mvccTs" in text or "Method not implemented" in text or "AllocTimestamp" in text)


for _name in ("grpc._server", "pymilvus.orm.iterator"):
    logging.getLogger(_name).addFilter(_NoTimestampServiceNoise())


def bm25_text(text: str) -> str:
    return " ".join(tokenize(text or ""))[:MAX_TEXT_CHARS]


@dataclass
class StoreInfo:
    """What `{prefix}_info` records: the schema the catalog was created with, models and field types."""

    channels: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {kind, encoder, dim}
    layout: str = "single"  # "single" | "split" (one collection per dense channel)
    models: dict[str, str | None] = field(default_factory=dict)  # clip_model, text_model
    field_types: dict[str, str] = field(default_factory=dict)  # metadata field -> str|int|float|bool
    search_params: dict[str, dict] = field(default_factory=dict)  # dense field -> search params (ef, nprobe)
    version: int = SCHEMA_VERSION

    def to_rows(self) -> list[dict[str, Any]]:
        return [{"key": "info", "value": json.dumps(self.__dict__), "v": [1.0, 0.0]}]

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> "StoreInfo | None":
        for row in rows:
            if row.get("key") == "info":
                data = json.loads(row["value"])
                return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        return None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:200]


class CatalogStore:
    """Open with `CatalogStore.open(settings, ...)`; close (or use as a context manager) to release Lite's lock."""

    def __init__(self, settings: Settings, client: Any, caps: Capabilities, info: StoreInfo | None,
                 channels: list[Channel]) -> None:
        self.settings = settings
        self.client = client
        self.caps = caps
        self.info = info
        self.channels = channels
        self._client_bm25_index = ClientBM25(caps.label, self._read_texts)
        self._closed = False

    # ------------------------------------------------------------------ open / create
    @classmethod
    def open(cls, settings: Settings, *, create: bool = False, dims: dict[str, int] | None = None,
             channels: Sequence[Channel] | None = None, models: dict[str, str | None] | None = None,
             expected_rows: int = 0) -> "CatalogStore":
        """Open the catalog at settings.store_uri.

        create=True makes it when missing, with the given channels (default: every declared one whose encoder is
        in dims: {"clip": 512, "text": 384}) and the models recorded; an existing catalog keeps its own schema.
        create=False on a missing catalog raises StoreUnavailableError("no index ...").
        """
        from pymilvus import MilvusClient

        uri = settings.store_uri
        if settings.is_embedded:
            if not create and not Path(uri).exists():
                raise StoreUnavailableError(f"no index at {uri}: run `mmrag index PATH` first (or pass --data-dir/--uri)")
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            embedded_lock.acquire(uri)
        try:
            client = MilvusClient(uri=uri, token=settings.token, timeout=10)
            caps = detect(client)
            store = cls(settings, client, caps, None, [])
            store._open_or_create(create, dims or {}, channels, models or {}, expected_rows)
            return store
        except Exception as exc:
            if settings.is_embedded:
                embedded_lock.release(uri)
            if isinstance(exc, MmragError):
                raise
            if settings.is_embedded and "Open local milvus failed" in str(exc):
                raise StoreUnavailableError(embedded_lock.in_use_message(uri)) from exc
            raise StoreUnavailableError(cls.unreachable_message(settings, exc)) from exc

    @staticmethod
    def unreachable_message(settings: Settings, exc: BaseException) -> str:
        hint = ("start it (`docker compose up -d`, or `milvus-lite server --data-dir FOLDER --host 127.0.0.1 --port "
                "19530`) or pass another --uri") if not settings.is_embedded else "check the folder and its permissions"
        return f"cannot use Milvus at {settings.store_uri}: {_reason(exc)}; {hint}"

    @property
    def info_collection(self) -> str:
        return f"{self.settings.collection_prefix}_info"

    @property
    def primary(self) -> str:
        """The collection holding every scalar field (in the split layout, every collection holds them)."""
        if self.info is not None and self.info.layout == "split":
            return self.collection_of(self.dense_channels[0])
        return f"{self.settings.collection_prefix}_catalog"

    @property
    def dense_channels(self) -> list[Channel]:
        return [c for c in self.channels if c.kind == DENSE]

    @property
    def collections(self) -> list[str]:
        if self.info is not None and self.info.layout == "split":
            return [self.collection_of(c) for c in self.dense_channels]
        return [self.primary]

    def collection_of(self, channel: Channel) -> str:
        if self.info is not None and self.info.layout == "split":
            target = channel if channel.kind == DENSE else self.dense_channels[0]
            return f"{self.settings.collection_prefix}_{target.name}"
        return f"{self.settings.collection_prefix}_catalog"

    def _open_or_create(self, create: bool, dims: dict[str, int], channels: Sequence[Channel] | None,
                        models: dict[str, str | None], expected_rows: int) -> None:
        existing = set(self.client.list_collections())
        prefix = self.settings.collection_prefix
        if self.info_collection in existing:
            self.client.load_collection(self.info_collection)
            rows = self.client.query(self.info_collection, filter='key == "info"', output_fields=["key", "value"])
            self.info = StoreInfo.from_rows(rows)
        if self.info is None:
            if {f"{prefix}_caption", f"{prefix}_image"} & existing:
                raise StoreUnavailableError(
                    f"{self.settings.store_uri} holds an index from mmrag 0.1 (collections {prefix}_caption/_image): "
                    "index again into a new --data-dir (or --collection-prefix); the new layout keeps everything in one collection")
            if not create:
                raise StoreUnavailableError(f"no index at {self.settings.store_uri}: run `mmrag index PATH` first")
            self._create(dims, channels, models, expected_rows)
        else:
            self._adopt(dims)

    def _adopt(self, dims: dict[str, int]) -> None:
        assert self.info is not None
        if self.info.version != SCHEMA_VERSION:
            raise StoreUnavailableError(f"{self.settings.store_uri} has schema version {self.info.version}, "
                                        f"this mmrag reads {SCHEMA_VERSION}: index again into a new --data-dir")
        known = {c.name: c for c in declared()}
        self.channels = []
        for name in self.info.channels:
            if name in known:
                self.channels.append(known[name])
            else:
                log.warning("channel %r of this index is not declared in this process: it is not searched", name)
        self.check_dims(dims)
        for name in self.collections:
            self.client.load_collection(name)  # Milvus Lite 3 reopens collections released

    def _create(self, dims: dict[str, int], channels: Sequence[Channel] | None, models: dict[str, str | None],
                expected_rows: int) -> None:
        chosen = [c for c in (channels if channels is not None else declared())
                  if c.kind == BM25 or c.encoder in dims]
        if not any(c.kind == DENSE for c in chosen):
            raise MmragError("a catalog needs at least one dense channel (the caption text model)")
        layout = "single" if self.caps.multi_vector else "split"
        index_config, search_config = index_params_for(expected_rows, metric="COSINE",
                                                       overrides=self.settings.index_overrides, server=not self.caps.lite)
        self.channels = chosen
        self.info = StoreInfo(
            channels={c.name: {"kind": c.kind, "encoder": c.encoder, "dim": dims.get(c.encoder or "")} for c in chosen},
            layout=layout, models=dict(models),
            search_params={c.field: search_config for c in chosen if c.kind == DENSE},
        )
        for name in self.collections:
            if name not in self.client.list_collections():
                self._create_collection(name, index_config)
        self._write_info()
        log.info("created %s on %s (%s layout, %s)", ", ".join(self.collections), self.caps.label, layout,
                 index_config["index_type"])

    def _create_collection(self, name: str, index_config: dict[str, Any]) -> None:
        from pymilvus import DataType, Function, FunctionType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field(ID, DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field(PATH, DataType.VARCHAR, max_length=4096)
        schema.add_field(CAPTION, DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field(PENDING, DataType.BOOL)
        params = self.client.prepare_index_params()
        dense_params = {k: v for k, v in index_config.items() if k not in ("index_type", "metric_type")}
        for channel in self.channels:
            if self.collection_of(channel) != name:
                continue
            if channel.kind == DENSE:
                schema.add_field(channel.field, DataType.FLOAT_VECTOR, dim=int(self.info.channels[channel.name]["dim"]))
                params.add_index(field_name=channel.field, index_type=index_config["index_type"],
                                 metric_type=index_config["metric_type"], params=dense_params)
            elif self.caps.bm25_function:
                schema.add_field(channel.text_field, DataType.VARCHAR, max_length=MAX_VARCHAR, enable_analyzer=True,
                                 analyzer_params=BM25_ANALYZER)
                schema.add_field(channel.field, DataType.SPARSE_FLOAT_VECTOR)
                schema.add_function(Function(name=f"{channel.name}_bm25", function_type=FunctionType.BM25,
                                             input_field_names=[channel.text_field], output_field_names=[channel.field]))
                # Nested "params" too: Milvus Lite's gRPC adapter reads only that key (see rag/index_params.py).
                params.add_index(field_name=channel.field, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                                 params={**BM25_PARAMS, "params": dict(BM25_PARAMS)})
            else:
                schema.add_field(channel.text_field, DataType.VARCHAR, max_length=MAX_VARCHAR)
        self.client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")

    def _write_info(self) -> None:
        from pymilvus import DataType

        if self.info_collection not in self.client.list_collections():
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("value", DataType.VARCHAR, max_length=MAX_VARCHAR)
            schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # every collection needs a vector field
            params = self.client.prepare_index_params()
            params.add_index(field_name="v", index_type="FLAT", metric_type="L2")
            self.client.create_collection(self.info_collection, schema=schema, index_params=params,
                                          consistency_level="Strong")
        assert self.info is not None
        self.client.upsert(self.info_collection, self.info.to_rows())
        self.client.flush(self.info_collection)

    def check_dims(self, dims: dict[str, int]) -> None:
        """The loaded models must make vectors of the dimensions this index holds."""
        assert self.info is not None
        for name, spec in self.info.channels.items():
            encoder = spec.get("encoder")
            if spec.get("kind") == DENSE and encoder in dims and dims[encoder] != spec.get("dim"):
                raise StoreUnavailableError(
                    f"channel {name} holds {spec.get('dim')}-d vectors but the configured {encoder} model makes "
                    f"{dims[encoder]}-d ones: use the model the index was built with "
                    f"({self.info.models.get(encoder + '_model')}) or another --data-dir")

    # ------------------------------------------------------------------ errors
    @contextmanager
    def _milvus(self, what: str) -> Iterator[None]:
        """Milvus/gRPC failures (server killed, network gone) become one line naming the URI."""
        try:
            yield
        except MmragError:
            raise
        except Exception as exc:
            raise StoreUnavailableError(f"Milvus at {self.settings.store_uri} failed while {what}: {_reason(exc)}; "
                                        "if it is a server, check that it runs, then run the command again "
                                        "(an index run resumes where it stopped)") from exc

    # ------------------------------------------------------------------ reading
    @property
    def models(self) -> dict[str, str | None]:
        return dict(self.info.models) if self.info else {}

    @property
    def field_types(self) -> dict[str, str]:
        return dict(self.info.field_types) if self.info else {}

    def channel(self, name: str) -> Channel:
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise MmragError(f"this index has no {name!r} channel; it has {', '.join(c.name for c in self.channels)}")

    def count(self) -> int:
        with self._milvus("counting rows"):
            rows = self.client.query(self.primary, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def existing(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """id -> {path, caption_pending} for the ids stored in every collection (a half-written row is absent)."""
        if not ids:
            return {}
        found: dict[str, dict[str, Any]] | None = None
        with self._milvus("reading rows"):
            for name in self.collections:
                rows = {r[ID]: r for r in self.client.get(name, ids=list(ids), output_fields=[ID, PATH, PENDING])}
                found = rows if found is None else {i: r for i, r in found.items() if i in rows}
        return found or {}

    def ids(self) -> set[str]:
        """Every stored id (a full scan: for checks and tools, never on the search path)."""
        with self._milvus("reading ids"):
            return {row[ID] for row in self._scan(self.primary, [ID])}

    def pending(self) -> list[dict[str, Any]]:
        """Rows indexed without their VLM caption (id, path), to retry."""
        with self._milvus("reading pending rows"):
            return list(self._scan(self.primary, [ID, PATH], filter=f"{PENDING} == true"))

    def sample(self, limit: int = 2000) -> list[dict[str, Any]]:
        """Up to limit rows' fields (no vectors): what the app offers as filter choices, bounded at any size."""
        with self._milvus("sampling rows"):
            rows = self.client.query(self.primary, filter="", output_fields=["*"], limit=limit)
        return list(self._flatten(rows).values())

    def fetch(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """id -> {path, caption, caption_pending, metadata...} for result ids (no vectors)."""
        if not ids:
            return {}
        with self._milvus("fetching results"):
            # Scalars and dynamic metadata only: "*" would ship every vector back too.
            rows = self.client.get(self.primary, ids=list(ids), output_fields=[ID, PATH, CAPTION, PENDING, "$meta"], **READ)
        return self._flatten(rows)

    def _flatten(self, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out = {}
        skip = {c.field for c in self.channels} | {c.text_field for c in self.channels if c.text_field}
        for row in rows:
            meta = row.pop("$meta", None) or {}
            row = {k: v for k, v in row.items() if k not in skip}
            row.update({k: v for k, v in meta.items() if k not in row})
            out[row[ID]] = row
        return out

    def vectors(self, channel: str, ids: Sequence[str]) -> dict[str, list[float]]:
        ch = self.channel(channel)
        if ch.kind != DENSE or not ids:
            return {}
        with self._milvus("reading vectors"):
            rows = self.client.get(self.collection_of(ch), ids=list(ids), output_fields=[ID, ch.field])
        return {row[ID]: list(row[ch.field]) for row in rows}

    def _scan(self, name: str, fields: list[str], filter: str = "") -> Iterator[dict[str, Any]]:
        iterator = self.client.query_iterator(name, batch_size=_PAGE, filter=filter, output_fields=fields)
        try:
            while rows := iterator.next():
                yield from rows
        finally:
            iterator.close()

    # ------------------------------------------------------------------ search
    def filter(self, filters: dict[str, Any] | None, exclude_ids: Sequence[str] = ()) -> Filter:
        templates = self.caps.filter_templates
        reserved = set(SCALARS) | {c.field for c in self.channels} | {c.text_field for c in self.channels if c.text_field}
        built = build_filter(filters, self.field_types, templates=templates, reserved=reserved)
        return built.and_(ids_filter(ID, exclude_ids, negate=True, templates=templates))

    def search(self, channel: Channel, data: Any, k: int, flt: Filter | None = None,
               exclude: Sequence[Sequence[frozenset[str]]] = ()) -> list[tuple[str, float]]:
        """(id, score) best first: COSINE similarity for dense channels, BM25 score for BM25 channels.

        data: a vector (dense) or text (BM25; tokenised here). exclude (BM25 only): token groups (rag.query_parser
        negative_term_groups); a document holding every token of a group is left out.
        """
        flt = flt or Filter()
        k = min(k, MAX_LIMIT)
        if channel.kind == BM25:
            terms = bm25_text(data)
            if not terms:
                return []
            if not self.caps.bm25_function:
                return self._client_bm25(channel, terms, k, flt, exclude)
            if exclude:
                flt = flt.and_(exclusion_filter(channel.text_field, [list(g) for g in exclude]))
            request = {"data": [terms], "anns_field": channel.field, "search_params": {"metric_type": "BM25"}}
        else:
            params = search_config_for_k(self.info.search_params.get(channel.field, {}) if self.info else {}, k)
            request = {"data": [list(map(float, data))], "anns_field": channel.field,
                       "search_params": {"metric_type": "COSINE", "params": params}}
        with self._milvus(f"searching {channel.name}"):
            result = self.client.search(self.collection_of(channel), limit=k, output_fields=[ID], **request, **flt.kwargs(),
                                        **READ)
        if channel.kind == BM25:  # Milvus Lite reports BM25 as a negated distance, a server as the score: both are |score|
            return [(str(hit["id"]), abs(float(hit["distance"]))) for hit in result[0]]
        return [(str(hit["id"]), float(hit["distance"])) for hit in result[0]]

    def hybrid_search(self, requests: list[tuple[Channel, Any]], k: int, candidates: int, rrf_k: float,
                      flt: Filter | None = None, exclude: Sequence[Sequence[frozenset[str]]] = ()) -> list[tuple[str, float]]:
        """One Milvus hybrid_search over the channels' fields, fused by RRFRanker. Best first.

        exclude: as in search, applied to the BM25 requests."""
        from pymilvus import AnnSearchRequest, RRFRanker

        if not self.caps.hybrid_search or self.info is None or self.info.layout != "single":
            raise MmragError(f"{self.caps.label} has no hybrid_search over one collection: use --fusion client")
        if not self.caps.bm25_function and any(c.kind == BM25 for c, _ in requests):
            raise MmragError(f"{self.caps.label} has no BM25 function: use --fusion client")
        flt = flt or Filter()
        reqs = []
        base = flt
        for channel, data in requests:
            flt = base.and_(exclusion_filter(channel.text_field, [list(g) for g in exclude])) \
                if exclude and channel.kind == BM25 else base
            if channel.kind == BM25:
                terms = bm25_text(data)
                if not terms:
                    continue
                reqs.append(AnnSearchRequest([terms], channel.field, {"metric_type": "BM25"}, candidates,
                                             expr=flt.expr or None, expr_params=flt.params or None))
            else:
                params = search_config_for_k(self.info.search_params.get(channel.field, {}), candidates)
                reqs.append(AnnSearchRequest([list(map(float, data))], channel.field,
                                             {"metric_type": "COSINE", "params": params}, candidates,
                                             expr=flt.expr or None, expr_params=flt.params or None))
        if not reqs:
            return []
        # Milvus' RRFRanker(k) scores 1/(k + rank + 1) with rank from 0; LlamaIndex scores 1/(k + rank): k - 1 matches.
        limit = min(MAX_LIMIT, candidates * len(reqs))
        with self._milvus("running hybrid_search"):
            result = self.client.hybrid_search(self.primary, reqs, ranker=RRFRanker(rrf_k - 1), limit=limit,
                                               output_fields=[ID], **READ)
        hits = [(str(h["id"]), float(h["distance"])) for h in result[0]]
        hits.sort(key=lambda h: (-round(h[1], 8), h[0]))  # float32 sums: break near-ties by id, as client fusion does
        return hits[:k]

    def _client_bm25(self, channel: Channel, terms: str, k: int, flt: Filter,
                     exclude: Sequence[Sequence[frozenset[str]]] = ()) -> list[tuple[str, float]]:
        """BM25 where the server has no BM25 function (rag/client_bm25.py); the filter becomes an allowed-id set."""
        allowed = None
        if flt.expr:
            with self._milvus("filtering"):
                allowed = {r[ID] for r in self._scan(self.primary, [ID], filter=self._inline(flt))}
        return self._client_bm25_index.top(channel.name, terms, k, allowed=allowed, exclude=exclude)

    def _read_texts(self, channel_name: str) -> list[tuple[str, str]]:
        channel = self.channel(channel_name)
        with self._milvus("reading texts for client-side BM25"):
            return [(r[ID], r[channel.text_field]) for r in self._scan(self.collection_of(channel), [ID, channel.text_field])]

    @staticmethod
    def _inline(flt: Filter) -> str:
        if flt.params:  # only servers with templates get params, and those have the BM25 function
            raise MmragError("internal: templated filter on a server without BM25 function")
        return flt.expr

    # ------------------------------------------------------------------ writing
    def upsert(self, items: Sequence[IndexItem], vectors: dict[str, Sequence[Sequence[float]]],
               pending: Sequence[bool] | None = None) -> None:
        """Write each item's row (keyed by content hash, so a rerun never duplicates).

        vectors: dense channel name -> one vector per item. A path points at one id: rows holding one of these
        paths under another id (the file changed since it was indexed) are deleted first.
        Upserts are durable before a flush (Milvus' write-ahead log; a SIGKILLed run keeps them, checked on Lite
        and 2.3), so an index run flushes once at its end (`flush`): one segment per run keeps Milvus' BM25
        statistics catalog-wide, where a flush per batch made per-segment IDF reorder BM25 results.
        """
        if not items:
            return
        pending = list(pending) if pending is not None else [False] * len(items)
        rows = []
        for i, item in enumerate(items):
            row: dict[str, Any] = {k: v for k, v in item.metadata.items()
                                   if FIELD_NAME.fullmatch(k) and k not in SCALARS and not k.startswith("$")}
            row.update({ID: item.id, PATH: item.path, CAPTION: (item.caption or "")[:MAX_TEXT_CHARS], PENDING: bool(pending[i])})
            rows.append(row)
        stale = ids_filter(ID, [i.id for i in items], negate=True)
        stale_expr = f"{PATH} in [{', '.join(json.dumps(i.path, ensure_ascii=False) for i in items)}] and {stale.expr}"
        with self._milvus("writing rows"):
            for name in self.collections:
                self.client.delete(name, filter=stale_expr)
                out = []
                for i, row in enumerate(rows):
                    full = dict(row)
                    for channel in self.channels:
                        if self.collection_of(channel) != name:
                            continue
                        if channel.kind == DENSE:
                            full[channel.field] = [float(x) for x in vectors[channel.name][i]]
                        else:
                            full[channel.text_field] = bm25_text(channel.index_source(items[i]) or "")
                    out.append(full)
                self.client.upsert(name, out)
            self._record_field_types(items)
        self._client_bm25_index.invalidate()

    def flush(self) -> None:
        """Seal what this run wrote into segments (call once at the end of a run)."""
        with self._milvus("flushing"):
            for name in self.collections:
                self.client.flush(name)

    def _record_field_types(self, items: Sequence[IndexItem]) -> None:
        assert self.info is not None
        types = dict(self.info.field_types)
        for item in items:
            for key, value in item.metadata.items():
                kind = type_name(value)
                if kind and FIELD_NAME.fullmatch(key) and key not in SCALARS and key not in types:
                    types[key] = kind
        if types != self.info.field_types:
            self.info.field_types = types
            self._write_info()

    def delete(self, ids: Sequence[str]) -> None:
        with self._milvus("deleting rows"):
            for name in self.collections:
                self.client.delete(name, ids=list(ids))
        self._client_bm25_index.invalidate()

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        except Exception:  # closing a dead server's client must not mask the real outcome
            pass
        if self.settings.is_embedded:
            embedded_lock.release(self.settings.store_uri)

    def __enter__(self) -> "CatalogStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
