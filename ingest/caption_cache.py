"""Caption cache: sqlite rows keyed by (content_hash, source, model_or_engine) -> text.

WAL journal: readers in other processes never block on a writer, and every put is its own committed
transaction, so a killed index run keeps every caption it had paid for.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType

from rag.errors import MmragError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
    content_hash TEXT NOT NULL,
    source TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (content_hash, source, model)
) WITHOUT ROWID
"""


class CaptionCache:
    """Persistent caption/OCR/VLM text per image content hash; one connection, safe to share between threads."""

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across process kills
            self._conn.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise MmragError(f"cannot open caption cache {self.path}: {exc}") from exc

    def get(self, content_hash: str, source: str, model: str) -> str | None:
        """The cached text, '' for a cached empty result, None when never stored."""
        with self._lock:
            row = self._run(
                "SELECT text FROM captions WHERE content_hash=? AND source=? AND model=?",
                (content_hash, source, model),
            ).fetchone()
        return None if row is None else row[0]

    def put(self, content_hash: str, source: str, model: str, text: str) -> None:
        with self._lock:
            self._run(
                "INSERT OR REPLACE INTO captions (content_hash, source, model, text, created_at) VALUES (?, ?, ?, ?, ?)",
                (content_hash, source, model, text, time.time()),
            )

    def count(self, source: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM captions", ()
        if source is not None:
            sql, args = sql + " WHERE source=?", (source,)
        with self._lock:
            return int(self._run(sql, args).fetchone()[0])

    def _run(self, sql: str, args: tuple[object, ...]) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, args)
        except sqlite3.ProgrammingError as exc:
            raise MmragError(f"caption cache {self.path} is closed") from exc
        except sqlite3.Error as exc:
            raise MmragError(f"caption cache {self.path} failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "CaptionCache":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
