"""SQLite cache of raw VLM replies keyed by (image sha256, prompt key, model, crop key). Errors are never cached."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from rag.errors import MmragError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vlm_answers (
    image_sha TEXT NOT NULL,
    prompt TEXT NOT NULL,
    model TEXT NOT NULL,
    crop TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (image_sha, prompt, model, crop)
)
"""


class VLMCache:
    """`crop` is the crop spec plus tile, e.g. 'none' or '3x3#4'; `prompt` is prompts.prompt_key(variant)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30)
            self._db.execute(_SCHEMA)
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise MmragError(f"cannot open VLM cache {self.path}: {exc}") from None
        self.hits = 0
        self.misses = 0

    def get(self, image_sha: str, prompt: str, model: str, crop: str) -> str | None:
        row = self._db.execute(
            "SELECT response FROM vlm_answers WHERE image_sha=? AND prompt=? AND model=? AND crop=?",
            (image_sha, prompt, model, crop),
        ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return row[0]

    def put(self, image_sha: str, prompt: str, model: str, crop: str, response: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO vlm_answers VALUES (?, ?, ?, ?, ?, ?)",
            (image_sha, prompt, model, crop, response, time.time()),
        )
        self._db.commit()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM vlm_answers").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "VLMCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
