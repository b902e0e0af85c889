"""What the app's index panel shows, and the messages (with the command to run) when there is no usable index."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rag.config import Settings

SERVER_PORT = 19530
_TIME_KEYS = ("indexed_at", "index_time", "added_at")


@dataclass(frozen=True)
class IndexInfo:
    catalog_size: int
    store_uri: str
    embedded: bool
    clip_model: str | None
    text_model: str
    available_modes: list[str] = field(default_factory=list)
    last_indexed: datetime | None = None

    @property
    def last_indexed_text(self) -> str:
        if self.last_indexed is None:
            return "unknown"
        return self.last_indexed.astimezone().strftime("%Y-%m-%d %H:%M:%S")

    @property
    def models_text(self) -> str:
        clip = self.clip_model or "none (caption side only)"
        return f"CLIP: {clip} · captions: {self.text_model}"


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and value > 0:
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def read_index_state(data_dir: Path) -> dict[str, Any]:
    """data_dir/last_index.json, written by `mmrag index` after each run ({} when absent or unreadable)."""
    try:
        state = json.loads((Path(data_dir) / "last_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def last_index_time(
    metadata: Iterable[Mapping[str, Any]], store_uri: str | None = None, state: Mapping[str, Any] | None = None
) -> datetime | None:
    """When the index last changed: last_index.json's time, else the newest 'indexed_at'-style catalog field,
    else the newest file change inside an embedded store folder (None for a server without either)."""
    when = _parse_time((state or {}).get("last_index_time"))
    if when is not None:
        return when
    newest: datetime | None = None
    for row in metadata:
        for key in _TIME_KEYS:
            when = _parse_time(row.get(key))
            if when and (newest is None or when > newest):
                newest = when
    if newest is not None or not store_uri or "://" in store_uri:
        return newest
    folder = Path(store_uri)
    if not folder.is_dir():
        return None
    stamps = [
        os.path.getmtime(os.path.join(root, name))
        for root, _, names in os.walk(folder)
        for name in names
        if name != "LOCK"
    ]
    return datetime.fromtimestamp(max(stamps), tz=timezone.utc) if stamps else None


def _env_prefix(settings: Settings) -> str:
    if settings.uri:
        return f"MMRAG_URI={shlex.quote(settings.uri)}"
    return f"MMRAG_DATA_DIR={shlex.quote(str(settings.data_dir))}"


def index_command(settings: Settings, folder: str = "/path/to/images", metadata: str | None = "/path/to/metadata.jsonl") -> str:
    """The shell line that fills this app's store."""
    clip = "" if settings.clip_model else " MMRAG_CLIP_MODEL=none"
    sidecar = f" --metadata {metadata}" if metadata else ""
    return f"{_env_prefix(settings)}{clip} mmrag index {folder}{sidecar}"


def server_commands(settings: Settings, port: int = SERVER_PORT) -> list[str]:
    """Serve the embedded store with milvus-lite server so `mmrag index` and `mmrag app` can share it."""
    store = settings.uri if settings.is_embedded and settings.uri else str(settings.data_dir / "milvus.db")
    uri = f"http://127.0.0.1:{port}"
    return [
        f"milvus-lite server --data-dir {shlex.quote(store)} --host 127.0.0.1 --port {port}",
        f"MMRAG_URI={uri} mmrag index /path/to/images --metadata /path/to/metadata.jsonl",
        f"MMRAG_URI={uri} mmrag app",
    ]


def is_missing_index(message: str) -> bool:
    return "no index at" in message.lower()


def is_lock_error(message: str) -> bool:
    text = message.lower()
    return "lock" in text or "another process" in text


def empty_index_message(settings: Settings) -> tuple[str, list[str]]:
    return (
        f"The index at {settings.store_uri} is empty: nothing to search yet. Index a folder of images, then press Reload.",
        [index_command(settings)],
    )


def store_error_message(settings: Settings, error: str) -> tuple[str, list[str]]:
    """(explanation, commands) for a store that could not be opened."""
    if is_missing_index(error):
        return empty_index_message(settings)
    if settings.is_embedded and is_lock_error(error):
        return (
            f"The embedded store {settings.store_uri} is held by another process (probably `mmrag index`); "
            "Milvus Lite lets one process open it at a time. Wait for it to finish and press Reload, "
            "or serve the store so the indexer and the app share it:",
            server_commands(settings),
        )
    if not settings.is_embedded:
        parsed = urlparse(settings.store_uri)
        port = parsed.port or SERVER_PORT
        return (
            f"Cannot reach the Milvus server at {settings.store_uri} ({error}). Start it (or fix MMRAG_URI), then press Reload:",
            [f"milvus-lite server --data-dir {shlex.quote(str(settings.data_dir / 'milvus.db'))} --host 127.0.0.1 --port {port}"],
        )
    return (f"Cannot open the store {settings.store_uri}: {error}", [index_command(settings)])
