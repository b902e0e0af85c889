"""`mmrag index`: hash, caption, encode every channel and upsert a folder into the Milvus catalog.

Ids are content hashes and rows are upserted batch by batch (flushed each time), so a run killed at any point
and started again skips what is stored and ends with every image exactly once. A path points at one id: when a
file changes, its old row is replaced. An image whose VLM caption failed is stored with `caption_pending` and
captioned again by the next run that has the VLM captioner on.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from ingest.captions import CaptionBuilder
from ingest.discover import discover
from ingest.metadata import join_sentences
from rag.channels import DENSE, Channel, IndexItem
from rag.clip_embedding import ClipEmbedding
from rag.config import Settings
from rag.encoders import Encoders
from rag.errors import MmragError
from rag.hashing import file_sha256
from rag.images import BadImageError, read_image
from rag.store import CatalogStore

log = logging.getLogger(__name__)
NEAR_DUPLICATE_COSINE = 0.95


@dataclass
class IndexReport:
    indexed: int = 0
    already_indexed: int = 0
    recaptioned: int = 0  # rows whose pending VLM caption was filled in this run
    pending: list[tuple[str, str]] = field(default_factory=list)  # (path, why its VLM caption is pending)
    bad_files: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (path, path of the identical file indexed)
    near_duplicates: list[tuple[str, str, float]] = field(default_factory=list)  # (id, id, image cosine)
    metadata_problems: list[str] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, message), e.g. corrupt EXIF
    total_in_store: int = 0
    channels: list[str] = field(default_factory=list)
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


def _near_duplicates(store: CatalogStore, clip: Channel, ids: list[str], vectors: np.ndarray,
                     threshold: float) -> list[tuple[str, str, float]]:
    """Pairs above threshold: within this batch, and against what the store already holds."""
    pairs: list[tuple[str, str, float]] = []
    sims = vectors @ vectors.T
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            if sims[i, j] >= threshold:
                pairs.append((ids[i], ids[j], float(sims[i, j])))
    for doc_id, vector in zip(ids, vectors):
        for other, score in store.search(clip, vector.tolist(), 2):
            if other != doc_id and other not in ids and score >= threshold:
                pairs.append((doc_id, other, float(score)))
    return pairs


class Indexer:
    """One index run's state: the store, the models, the caption builder and the report."""

    def __init__(self, store: CatalogStore, encoders: Encoders, builder: CaptionBuilder, root: Path,
                 report: IndexReport, near_duplicate_cosine: float) -> None:
        self.store = store
        self.encoders = encoders
        self.builder = builder
        self.root = root
        self.report = report
        self.near_duplicate_cosine = near_duplicate_cosine
        self.dense = [c for c in store.channels if c.kind == DENSE]
        self.has_ocr_channel = any(c.name == "ocr" for c in store.channels)

    def _metadata(self, item: _Item, sources: Sequence[str]) -> dict[str, Any]:
        metadata: dict[str, Any] = dict(self.builder.catalog_fields(item.path))
        root = self.root
        metadata.update(
            caption_sources=sorted(sources),
            file_name=item.path.name,
            folder=str(item.path.parent.relative_to(root)) if item.path.is_relative_to(root) and root.is_dir() else "",
        )
        return metadata

    def _caption_text(self, caption: Any) -> str:
        """With an OCR channel, text read inside the image stays in that channel, out of the caption text
        (unless it is all there is), so caption vectors and caption BM25 describe the picture."""
        if self.has_ocr_channel and "ocr" in caption.sources and len(caption.sources) > 1:
            return join_sentences([text for source, text in caption.sources.items() if source != "ocr"])
        return caption.text

    def index_batch(self, batch: list[_Item], pending_before: set[str]) -> None:
        items: list[IndexItem] = []
        pending: list[bool] = []
        for item in batch:
            try:
                loaded = read_image(item.path)  # the id is the hash of exactly the bytes decoded
            except BadImageError as exc:
                self.report.bad_files.append((str(item.path), str(exc)))
                continue
            self.report.warnings.extend((str(item.path), w) for w in loaded.warnings)
            if loaded.sha256 != item.content_hash:  # the file changed since it was hashed: index what was read
                item = _Item(item.path, loaded.sha256)
            image = loaded.image
            caption = self.builder.build(item.content_hash, item.path, image)
            is_pending = bool(getattr(caption, "pending", False))
            if is_pending:
                errors = getattr(caption, "errors", None) or ["VLM caption failed"]
                self.report.pending.append((str(item.path), "; ".join(errors)))
            items.append(IndexItem(item.content_hash, str(item.path.resolve()), image, self._caption_text(caption),
                                   dict(caption.sources), self._metadata(item, caption.sources)))
            pending.append(is_pending)
        vectors = self._encode(items, pending)
        if not items:
            return
        self.store.upsert(items, vectors, pending)
        for item, is_pending in zip(items, pending):
            if item.id in pending_before:
                self.report.recaptioned += int(not is_pending)
            else:
                self.report.indexed += 1

    def _encode(self, items: list[IndexItem], pending: list[bool]) -> dict[str, list[list[float]]]:
        """One vector per item per dense channel; an item whose encoding fails is dropped (and reported) alone."""
        vectors: dict[str, list[Any]] = {}
        for channel in self.dense:
            values = [channel.index_source(item) for item in items]
            vectors[channel.name], errors = self.encoders.index_batch_isolated(channel.encoder, values)
            for i, why in sorted(errors.items()):
                self.report.bad_files.append((items[i].path, why))
            if errors:
                keep = [i for i in range(len(items)) if i not in errors]
                for name in vectors:
                    vectors[name] = [vectors[name][i] for i in keep]
                items[:] = [items[i] for i in keep]
                pending[:] = [pending[i] for i in keep]
            if channel.encoder == "clip" and items:
                ids = [item.id for item in items]
                self.report.near_duplicates.extend(_near_duplicates(
                    self.store, channel, ids, np.asarray(vectors[channel.name]), self.near_duplicate_cosine))
        return vectors


def index_folder(folder: Path, settings: Settings, *, metadata: Path | None = None, ocr: bool = False,
                 vlm_captions: bool = False, show_progress: bool = True, clip: ClipEmbedding | None = None,
                 text_embedder: Any = None, near_duplicate_cosine: float = NEAR_DUPLICATE_COSINE,
                 channels: Sequence[Channel] | None = None) -> IndexReport:
    """Index every image under folder; see the module docstring for the guarantees.

    channels: the channels a new catalog is created with (default: every declared one the models allow).
    """
    started = time.perf_counter()
    folder = Path(folder)
    if not folder.exists():
        raise MmragError(f"no such file or folder: {folder}")
    report = IndexReport()
    found = discover(folder)
    report.bad_files.extend((str(p), why) for p, why in found.skipped)
    root = folder if folder.is_dir() else folder.parent
    # Caption sources first: a missing sidecar or a misconfigured VLM fails before any model loads.
    builder = CaptionBuilder(settings, metadata=metadata, root=root, ocr=ocr, vlm=vlm_captions)
    report.metadata_problems = builder.metadata_problems
    try:
        encoders = Encoders.load(settings, clip=clip, text=text_embedder)
        items = _hash_files(found.images, report, show_progress)
        store = CatalogStore.open(settings, create=True, dims=encoders.dims, channels=channels,
                                  models=encoders.models, expected_rows=len(items))
        try:
            _check_models(store, encoders, settings)
            report.channels = [c.name for c in store.channels]
            report.clip_model = store.models.get("clip_model") if "clip" in report.channels else None
            report.text_model = encoders.text.model_name
            indexer = Indexer(store, encoders, builder, root, report, near_duplicate_cosine)
            _run(indexer, items, settings, vlm_captions, show_progress)
            store.flush()
            report.total_in_store = store.count()
        finally:
            store.close()
    finally:
        builder.close()
    report.seconds = time.perf_counter() - started
    _write_state(settings, report)
    return report


def _check_models(store: CatalogStore, encoders: Encoders, settings: Settings) -> None:
    stored = store.models
    if stored.get("text_model") and stored["text_model"] != encoders.text.model_name:
        raise MmragError(f"{settings.store_uri} was indexed with text model {stored['text_model']!r}; "
                         f"use --text-model {stored['text_model']} or another --data-dir")
    names = {c.name for c in store.channels}
    if any(c.encoder == "clip" for c in store.channels) and encoders.clip is None:
        raise MmragError(f"{settings.store_uri} holds CLIP vectors ({stored.get('clip_model')}): pass --clip-model "
                         f"{stored.get('clip_model')} to add images, or index into another --data-dir")
    if encoders.clip is not None and "clip" not in names:
        log.warning("%s was created caption-side only: CLIP vectors are not stored (index into a new --data-dir "
                    "to add them)", settings.store_uri)
    if encoders.clip is not None and stored.get("clip_model") and stored["clip_model"] != encoders.clip.model_id:
        raise MmragError(f"{settings.store_uri} was indexed with CLIP model {stored['clip_model']!r}; "
                         f"use --clip-model {stored['clip_model']} or another --data-dir")


def _run(indexer: Indexer, items: list[_Item], settings: Settings, vlm_captions: bool, show_progress: bool) -> None:
    """Batch by batch: skip what is stored (unless its VLM caption is pending and the VLM is on), write the rest."""
    store, report = indexer.store, indexer.report
    if vlm_captions:  # pending rows from earlier runs whose files are outside this folder are retried too
        listed = {item.content_hash for item in items}
        for row in store.pending():
            path = Path(row["path"])
            if row["id"] not in listed and path.is_file():
                items.append(_Item(path, row["id"]))
    progress = tqdm(total=len(items), desc="indexing", unit="img", disable=not show_progress)
    try:
        for start in range(0, len(items), settings.batch_size):
            batch = items[start : start + settings.batch_size]
            stored = store.existing([item.content_hash for item in batch])
            pending_before = {i for i, row in stored.items() if row.get("caption_pending")}
            todo = [item for item in batch
                    if item.content_hash not in stored or (vlm_captions and item.content_hash in pending_before)]
            report.already_indexed += len(batch) - len(todo)
            if todo:
                indexer.index_batch(todo, pending_before)
            progress.update(len(batch))
    finally:
        progress.close()


def _write_state(settings: Settings, report: IndexReport) -> None:
    """What the app's index panel shows: last index time and models (the store itself may be remote)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    state = {"last_index_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "store_uri": settings.store_uri,
             "clip_model": report.clip_model, "text_model": report.text_model, "total_in_store": report.total_in_store,
             "channels": report.channels}
    (settings.data_dir / "last_index.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
