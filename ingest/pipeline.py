"""`mmrag index`: hash, caption, embed (CLIP image + caption text) and upsert a folder into both collections.

Ids are content hashes and rows are upserted batch by batch (flushed each time), so a run killed at
any point and started again skips what is stored and ends with every image exactly once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ingest.captions import CaptionBuilder
from ingest.discover import discover
from rag.catalog import CatalogRecord
from rag.clip_embedding import ClipEmbedding, load_clip
from rag.config import Settings
from rag.errors import MmragError
from rag.hashing import file_sha256
from rag.images import BadImageError, load_image
from rag.milvus_hybrid import NativeHybridIndex, native_hybrid_enabled
from rag.store import CatalogStore
from rag.text_embedding import embedder_dim, make_text_embedder

log = logging.getLogger(__name__)
NEAR_DUPLICATE_COSINE = 0.95


@dataclass
class IndexReport:
    indexed: int = 0
    already_indexed: int = 0
    bad_files: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (path, path of the identical file indexed)
    near_duplicates: list[tuple[str, str, float]] = field(default_factory=list)  # (id, id, image cosine)
    metadata_problems: list[str] = field(default_factory=list)
    total_in_store: int = 0
    clip_model: str | None = None
    text_model: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class _Item:
    path: Path
    content_hash: str


def _hash_files(paths: list[Path], report: IndexReport, show_progress: bool) -> list[_Item]:
    """One item per distinct content; identical copies are reported, unreadable files listed as bad."""
    seen: dict[str, Path] = {}
    items: list[_Item] = []
    for path in tqdm(paths, desc="hashing", unit="file", disable=not show_progress):
        try:
            digest = file_sha256(path)
        except OSError as exc:
            report.bad_files.append((str(path), f"cannot read: {exc.strerror or exc}"))
            continue
        if digest in seen:
            report.duplicates.append((str(path), str(seen[digest])))
            continue
        seen[digest] = path
        items.append(_Item(path, digest))
    return items


def _near_duplicates(store: CatalogStore, ids: list[str], vectors: np.ndarray, threshold: float) -> list[tuple[str, str, float]]:
    """Pairs above threshold: within this batch, and against what the store already holds."""
    pairs: list[tuple[str, str, float]] = []
    sims = vectors @ vectors.T
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            if sims[i, j] >= threshold:
                pairs.append((ids[i], ids[j], float(sims[i, j])))
    for doc_id, vector in zip(ids, vectors):
        for other, score in store.search("image", vector.tolist(), 2):
            if other != doc_id and score >= threshold:
                pairs.append((doc_id, other, float(score)))
    return pairs


def _record(item: _Item, caption: Any, builder: CaptionBuilder, root: Path, clip_id: str | None, text_id: str) -> CatalogRecord:
    metadata: dict[str, Any] = dict(builder.catalog_fields(item.path))
    metadata.update(
        caption_sources=sorted(caption.sources),
        file_name=item.path.name,
        folder=str(item.path.parent.relative_to(root)) if item.path.is_relative_to(root) and root.is_dir() else "",
        clip_model=clip_id or "none",
        text_model=text_id,
    )
    return CatalogRecord(id=item.content_hash, path=str(item.path.resolve()), caption=caption.text, metadata=metadata)


def index_folder(folder: Path, settings: Settings, *, metadata: Path | None = None, ocr: bool = False,
                 vlm_captions: bool = False, show_progress: bool = True, clip: ClipEmbedding | None = None,
                 text_embedder: Any = None, near_duplicate_cosine: float = NEAR_DUPLICATE_COSINE) -> IndexReport:
    """Index every image under folder; see the module docstring for the guarantees."""
    started = time.perf_counter()
    folder = Path(folder)
    if not folder.exists():
        raise MmragError(f"no such file or folder: {folder}")
    report = IndexReport()
    found = discover(folder)
    report.bad_files.extend((str(p), why) for p, why in found.skipped)
    # Caption sources first: a missing sidecar or a misconfigured VLM fails before any model loads.
    builder = CaptionBuilder(settings, metadata=metadata, root=folder if folder.is_dir() else folder.parent, ocr=ocr, vlm=vlm_captions)
    report.metadata_problems = builder.metadata_problems
    if clip is None and settings.clip_model:
        clip = load_clip(settings.clip_model, batch_size=settings.batch_size)
    text_embedder = text_embedder or make_text_embedder(settings.text_model)
    report.clip_model = clip.model_id if clip else None
    report.text_model = text_embedder.model_name

    items = _hash_files(found.images, report, show_progress)
    store = CatalogStore(settings, image_dim=clip.dim if clip else None, text_dim=embedder_dim(text_embedder),
                         expected_rows=len(items))
    try:
        stored = store.stored_models()
        if stored.get("text_model") and stored["text_model"] != report.text_model:
            raise MmragError(f"{settings.store_uri} was indexed with text model {stored['text_model']!r}; "
                             f"use --text-model {stored['text_model']} or another --data-dir")
        done = store.caption_ids()
        if clip is not None:
            done &= store.image_ids()
        todo = [item for item in items if item.content_hash not in done]
        report.already_indexed = len(items) - len(todo)
        progress = tqdm(total=len(todo), desc="indexing", unit="img", disable=not show_progress)
        try:
            for start in range(0, len(todo), settings.batch_size):
                batch = todo[start : start + settings.batch_size]
                _index_batch(batch, store, builder, clip, text_embedder, folder, report, near_duplicate_cosine)
                progress.update(len(batch))
        finally:
            progress.close()
        report.total_in_store = len(store.caption_ids())
        if native_hybrid_enabled():  # mirror into the one collection Milvus' hybrid_search needs (one flush)
            NativeHybridIndex.open(settings, text_dim=embedder_dim(text_embedder), clip_dim=clip.dim if clip else None,
                                   client=store.client).sync_from_store(store, show_progress=show_progress)
    finally:
        store.close()
        builder.close()
    report.seconds = time.perf_counter() - started
    _write_state(settings, report)
    return report


def _index_batch(batch: list[_Item], store: CatalogStore, builder: CaptionBuilder, clip: ClipEmbedding | None,
                 text_embedder: Any, root: Path, report: IndexReport, near_duplicate_cosine: float) -> None:
    records: list[CatalogRecord] = []
    images = []
    batch_paths = {item.content_hash: item.path for item in batch}
    for item in batch:
        try:
            image = load_image(item.path)
        except BadImageError as exc:
            report.bad_files.append((str(item.path), str(exc)))
            continue
        caption = builder.build(item.content_hash, item.path, image)
        records.append(_record(item, caption, builder, root, report.clip_model, report.text_model))
        images.append(image)
    image_vectors = None
    if clip is not None and records:
        # One image that fails in CLIP (memory, decoder) is a bad file; the rest of the batch goes on.
        embedded = clip.embed_images_isolated(images)
        for i, why in sorted(embedded.errors.items()):
            report.bad_files.append((str(batch_paths[records[i].id]), why))
        records = [r for r, v in zip(records, embedded.vectors) if v is not None]
        image_vectors = [v for v in embedded.vectors if v is not None]
    if not records:
        return
    text_vectors = text_embedder.get_text_embedding_batch([r.caption or " " for r in records])
    if image_vectors is not None:
        ids = [r.id for r in records]
        report.near_duplicates.extend(_near_duplicates(store, ids, np.asarray(image_vectors), near_duplicate_cosine))
    store.upsert(records, text_vectors, image_vectors)
    report.indexed += len(records)


def _write_state(settings: Settings, report: IndexReport) -> None:
    """What the app's index panel shows: last index time and models (the store itself may be remote)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    state = {"last_index_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "store_uri": settings.store_uri,
             "clip_model": report.clip_model, "text_model": report.text_model, "total_in_store": report.total_in_store}
    (settings.data_dir / "last_index.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
