"""SearchEngine: the catalog's channels → one retriever each → a fusion strategy → results.

Opening reads no catalog rows: the store's info row gives models, channels and filter field types, and a
query fetches fields only for the ids it returns. The JSON form (`SearchResponse.to_dict`) is a stable contract
read by the eval harness and the app.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from rag.channels import DENSE, Channel, QueryPart, declared
from rag.clip_embedding import ClipEmbedding
from rag.config import DEFAULT_MATCH_THRESHOLDS, Settings, check_weights
from rag.encoders import Encoders, combine
from rag.errors import MmragError
from rag.fusion import WeightedRRFRetriever, check_native_weights
from rag.hashing import file_sha256
from rag.match import MatchJudge, best
from rag.query_parser import Negation, matched_terms, negative_term_groups, parse_query, parts_to_dicts
from rag.retrievers import ChannelRetriever, SearchQuery
from rag.store import CatalogStore

CANDIDATES_PER_CHANNEL = 50
HYBRID = "hybrid"


@dataclass
class SearchResult:
    id: str
    path: str
    score: float
    rank: int
    ranks: dict[str, int | None]
    caption: str
    metadata: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)  # each channel's own score (cosine, BM25)
    matched_terms: list[str] = field(default_factory=list)  # positive query tokens (rag.bm25) its caption holds
    match: str | None = None  # "good" | "weak" | "none" from the calibrated channels' scores (rag/match.py)


@dataclass
class SearchResponse:
    query: str
    mode: str
    results: list[SearchResult]
    timings_ms: dict[str, float]
    image: str | None = None
    fusion: str | None = None
    parts: list[QueryPart] = field(default_factory=list)  # what was searched: the parsed query
    negations: list[Negation] = field(default_factory=list)  # negations found in the plain text
    match: str | None = None  # the best result's match; None: no calibrated channel took part
    match_evidence: dict[str, float | None] = field(default_factory=dict)  # channel -> strongest normalised score
    bm25_query: str = ""  # the text BM25 channels searched (positive parts): what BM25 evidence is normalised by

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query": self.query,
            "mode": self.mode,
            "results": [{k: v for k, v in asdict(r).items() if k != "metadata"} for r in self.results],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }
        if self.image is not None:
            out["image"] = self.image
        if self.fusion is not None:
            out["fusion"] = self.fusion
        out["parts"] = parts_to_dicts(self.parts)
        out["negations"] = [n.to_dict() for n in self.negations]
        out["match"] = self.match
        out["match_evidence"] = {k: (round(v, 4) if v is not None else None) for k, v in self.match_evidence.items()}
        return out


def limit_query_threads(threads: int) -> None:
    """`threads` torch + one BLAS thread for single-query inference (bench/RESULTS.md 2b; 0 keeps the defaults).

    Call it where a process only searches (`mmrag search`, the app), once its models are loaded: torch is limited
    only when a model brought it in (a caption-only index runs on onnxruntime and never imports it), and
    threadpoolctl only reaches the BLAS libraries loaded by then. Indexing keeps both cores (1.8x on batches).
    """
    if threads > 0:
        from threadpoolctl import threadpool_limits

        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        threadpool_limits(1, user_api="blas")


class SearchEngine:
    # BM25 channels skip documents whose text holds every token of a negative part (the eval ablates this).
    exclude_negated_bm25 = True

    def __init__(self, settings: Settings, store: CatalogStore, encoders: Encoders) -> None:
        self.settings = settings
        self.store = store
        self.encoders = encoders
        # Channels this process can query: a CLIP channel needs the CLIP model loaded.
        self.channels: list[Channel] = [c for c in store.channels if encoders.has(c.encoder)]
        self._retrievers = {c.name: ChannelRetriever(c, store) for c in self.channels}
        self._n_docs: int | None = None
        self.match_judge = MatchJudge.load(settings.match_thresholds, text_model=encoders.text.model_name,
                                           clip_model=settings.clip_model if encoders.clip is not None else None,
                                           required=Path(settings.match_thresholds) != DEFAULT_MATCH_THRESHOLDS)

    @property
    def clip(self) -> ClipEmbedding | None:
        return self.encoders.clip

    @property
    def text_embedder(self) -> Any:
        return self.encoders.text

    @classmethod
    def open(cls, settings: Settings, *, clip: ClipEmbedding | None = None, text_embedder: Any = None,
             models_from_index: bool = False) -> "SearchEngine":
        """Open for search: the store first (fails fast, before any model loads), then the models.

        Models may be passed in to share them (the app and eval load them once). models_from_index: use the
        CLIP and text models recorded in the index instead of the settings'.
        """
        store = CatalogStore.open(settings)
        try:
            stored = store.models
            if models_from_index and clip is None and text_embedder is None:
                settings = replace(settings, clip_model=stored.get("clip_model") or None,
                                   text_model=stored.get("text_model") or settings.text_model)
            encoders = Encoders.load(settings, clip=clip, text=text_embedder)
            if stored.get("text_model") and stored["text_model"] != encoders.text.model_name:
                raise MmragError(f"the index at {settings.store_uri} was built with text model {stored['text_model']!r}, "
                                 f"not {encoders.text.model_name!r}: pass --text-model {stored['text_model']}")
            store.check_dims(encoders.dims)
        except BaseException:
            store.close()
            raise
        return cls(settings, store, encoders)

    # ------------------------------------------------------------------ catalog facts
    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    @property
    def available_modes(self) -> list[str]:
        return self.channel_names + [HYBRID]

    @property
    def field_types(self) -> dict[str, str]:
        return self.store.field_types

    def count(self) -> int:
        return self.store.count()

    def records(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self.store.fetch(ids)

    # ------------------------------------------------------------------ search
    def search(self, text: str | None = None, *, image: str | Path | None = None, mode: str = HYBRID, k: int = 10,
               filters: dict[str, Any] | None = None, weights: dict[str, float] | None = None,
               fusion: str | None = None, parts: Sequence[QueryPart] | None = None,
               literal: bool = False) -> SearchResponse:
        """Text, image or composite (parts) query in one mode: a channel name or "hybrid".

        The text is parsed (rag.query_parser: `2:dog + beach - people`, and "no X"/"without X"/"nobody" become
        negative parts) unless literal, which sends it unchanged as one part.
        """
        started = time.perf_counter()
        fusion = fusion or self.settings.fusion
        self._check_mode(mode, k, fusion)
        weights = self._weights(weights)
        parts, negations = self._parse(text, parts, literal)
        parts, own_ids = self._parts(parts, image)
        timings: dict[str, float] = {}
        names = self.channel_names if mode == HYBRID else [mode]
        if mode == HYBRID:
            check_weights(weights, names)
            names = [n for n in names if weights.get(n, 1.0) > 0]
        inputs = self._inputs([self.store.channel(n) for n in names], parts, timings)
        names = [n for n in names if n in inputs]
        if not names:
            raise MmragError(self._nothing_to_search(mode, image))
        query = SearchQuery(query_str=" ".join(p.text for p in parts if p.text and not p.negative),
                            inputs=inputs, top_k=max(k, CANDIDATES_PER_CHANNEL),
                            filter=self.store.filter(filters, own_ids), timings_ms=timings)
        # BM25 channels drop documents holding a negative part's words (rag/store.py applies it per backend)
        query.exclude = negative_term_groups(parts) if self.exclude_negated_bm25 else []
        if mode == HYBRID and fusion == "native" and len(names) > 1:
            hits = self._native(names, query, k, weights)
        else:
            hits = self._client(names, query, k, weights)
        t = time.perf_counter()
        rows = self.store.fetch([doc_id for doc_id, _ in hits])
        timings["fetch"] = (time.perf_counter() - t) * 1000
        results = []
        for doc_id, score in hits:
            row = rows.get(doc_id)
            if row is None:  # deleted between search and fetch
                continue
            ranks = {c.name: query.ranks.get(c.name, {}).get(doc_id) for c in self.channels}
            scores = {c.name: query.scores.get(c.name, {}).get(doc_id) for c in self.channels}
            metadata = {key: value for key, value in row.items() if key not in ("id", "path", "caption")}
            results.append(SearchResult(doc_id, row["path"], score, len(results) + 1, ranks, row["caption"], metadata,
                                        scores, matched_terms(parts, row["caption"])))
        match, evidence = self._judge_match(results, query)
        timings["total"] = (time.perf_counter() - started) * 1000
        return SearchResponse(text or "", mode, results, timings, image=str(image) if image is not None else None,
                              fusion=fusion if mode == HYBRID else None, match=match, match_evidence=evidence,
                              parts=parts, negations=negations, bm25_query=str(inputs.get("bm25") or ""))

    def _judge_match(self, results: list[SearchResult], query: SearchQuery) -> tuple[str | None, dict[str, float | None]]:
        """Set each result's match and return the query's (rag/match.py); native fusion records no channel scores."""
        thresholds = self.match_judge.for_voters(name for name in query.inputs if name in query.scores)
        if not thresholds:
            return None, {}
        context = {"bm25_text": str(query.inputs.get("bm25") or ""),
                   "n_docs": self._catalog_size() if "bm25" in thresholds else 0}
        for result in results:
            result.match = self.match_judge.result_level(result.scores, thresholds, **context)
        evidence = self.match_judge.query_evidence(results, thresholds, **context)
        return best(r.match for r in results) or "none", evidence

    def _catalog_size(self) -> int:
        """Catalog size for the BM25 evidence scale, counted once per open: a count(*) per query would cost a
        Milvus round trip (and a scan on Milvus Lite), and the scale moves with log(N) only."""
        if self._n_docs is None:
            self._n_docs = self.store.count()
        return self._n_docs

    def _check_mode(self, mode: str, k: int, fusion: str) -> None:
        if mode not in self.available_modes:
            wanted = {c.name: c for c in declared()}.get(mode)
            if wanted is not None and wanted.encoder == "clip":
                raise MmragError(f"mode {mode!r} needs a CLIP model: index and search with --clip-model ID_OR_DIR")
            raise MmragError(f"this index has no {mode!r} mode; choose one of {', '.join(self.available_modes)}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise MmragError("k must be a whole number of at least 1")
        if fusion not in ("client", "native"):
            raise MmragError(f"unknown fusion {fusion!r}: choose client or native")

    def _weights(self, weights: dict[str, float] | None) -> dict[str, float]:
        """Settings' weights overridden per call; per-call names must be channels of this index."""
        known = [c.name for c in self.store.channels]
        merged = {**self.settings.fusion_weights, **(weights or {})}
        # Settings may weigh a declared channel this index lacks (clip on a caption-side index); a name that is
        # no channel at all, or a per-call name this index lacks, is a typo worth one line.
        declared_names = {c.name for c in declared()}
        bad = sorted((set(weights or {}) - set(known)) | (set(merged) - declared_names))
        if bad:
            raise MmragError(f"unknown channel {', '.join(bad)} in weights: this index has {', '.join(known)}")
        check_weights(merged, [])
        return {name: merged.get(name, 1.0) for name in known}

    @staticmethod
    def _parse(text: str | None, parts: Sequence[QueryPart] | None,
               literal: bool) -> tuple[list[QueryPart], list[Negation]]:
        """The text's parts (parsed unless literal) before any parts passed in."""
        out = list(parts or [])
        if text is None or not text.strip():
            return out, []
        if literal:
            return [QueryPart(text=" ".join(text.split())), *out], []
        parsed = parse_query(text)
        return [*parsed.parts, *out], list(parsed.negations)

    def _parts(self, parts: list[QueryPart], image: str | Path | None) -> tuple[list[QueryPart], list[str]]:
        """Image parts checked and described: a catalog image brings its stored caption (for the text channels)
        and its own hit is dropped. Returns (parts, ids to exclude)."""
        if image is not None:
            parts = [*parts, QueryPart(image=str(image))]
        if not parts:
            raise MmragError("empty query: give text, or --image PATH")
        if not any(not p.negative for p in parts):
            raise MmragError("the query has only negative parts: add something to look for")
        ids: dict[int, str] = {}
        for i, part in enumerate(parts):
            if part.image:
                path = Path(part.image)
                if not path.is_file():
                    raise MmragError(f"query image not found: {path}")
                ids[i] = file_sha256(path)
        rows = self.store.fetch(sorted(set(ids.values()))) if ids else {}
        out = [replace(p, image_caption=rows[ids[i]]["caption"]) if i in ids and ids[i] in rows and p.image_caption is None
               else p for i, p in enumerate(parts)]
        return out, sorted(set(ids.values()))

    def _inputs(self, channels: list[Channel], parts: list[QueryPart], timings: dict[str, float]) -> dict[str, Any]:
        """Each channel's query: a combined vector (dense) or the positive text (BM25); absent when it has none."""
        inputs: dict[str, Any] = {}
        for channel in channels:
            t = time.perf_counter()
            if channel.kind == DENSE:
                vectors = []
                for part in parts:
                    vector = self.encoders.query(channel.encoder, channel.query_source(part))
                    if vector is not None:
                        vectors.append((part.weight, vector))
                value = combine(vectors) if vectors else None
                timings[f"embed_{channel.name}"] = (time.perf_counter() - t) * 1000
            else:
                texts = [channel.query_source(p) for p in parts if not p.negative]
                value = " ".join(t for t in texts if t) or None
            if value is not None:
                inputs[channel.name] = value
        return inputs

    def _nothing_to_search(self, mode: str, image: str | Path | None) -> str:
        if image is not None:
            return ("nothing to search with: an image query needs a CLIP model (mode clip or hybrid), or an image "
                    "that is already in the catalog (its caption is used)")
        return f"nothing to search with in mode {mode}: the query has no text for it"

    def _client(self, names: list[str], query: SearchQuery, k: int, weights: dict[str, float]) -> list[tuple[str, float]]:
        if len(names) == 1:
            nodes = self._retrievers[names[0]].retrieve(query)
        else:
            fusion = WeightedRRFRetriever({n: self._retrievers[n] for n in names}, weights, top_k=k,
                                          rrf_k=self.settings.rrf_k)
            nodes = fusion.retrieve(query)
        return [(n.node.node_id, float(n.score or 0.0)) for n in nodes[:k]]

    def _native(self, names: list[str], query: SearchQuery, k: int, weights: dict[str, float]) -> list[tuple[str, float]]:
        check_native_weights({n: weights.get(n, 1.0) for n in names})
        t = time.perf_counter()
        requests = [(self.store.channel(n), query.inputs[n]) for n in names]
        hits = self.store.hybrid_search(requests, k, query.top_k, self.settings.rrf_k, query.filter,
                                        exclude=query.exclude)
        query.timings_ms["milvus_hybrid"] = (time.perf_counter() - t) * 1000
        return hits

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "SearchEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
