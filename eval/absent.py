"""Absent queries: things the sample catalog does not hold, and the word search that proves it.

A query is admitted only if none of its `terms` occurs as a word prefix (case-insensitive, so plurals and
"erupting" for "erupt" count) in any caption, COCO category or Open Images box label of the catalog.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from eval.gold import GoldError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ABSENT = ROOT / "eval" / "absent_queries.json"


@dataclass(frozen=True)
class AbsentQuery:
    id: str
    short: str
    descriptive: str
    terms: tuple[str, ...]

    def text(self, form: str) -> str:
        return self.short if form == "short" else self.descriptive


def load_absent(path: Path | str = DEFAULT_ABSENT) -> list[AbsentQuery]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        queries = [AbsentQuery(q["id"], q["short"], q["descriptive"], tuple(q["terms"])) for q in doc["queries"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GoldError(f"bad absent query file {path}: {type(exc).__name__}: {exc}") from None
    ids = [q.id for q in queries]
    if len(set(ids)) != len(ids):
        raise GoldError(f"absent query ids repeat in {path}")
    if any(not q.terms for q in queries):
        raise GoldError(f"every absent query in {path} needs the terms that name its subject")
    return queries


def catalog_texts(rows: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """(file, text) for every caption, category and Open Images box label of the catalog rows."""
    out = []
    for row in rows:
        texts = list(row.get("captions") or []) + list(row.get("categories") or [])
        texts += [box.get("label", "") for box in row.get("boxes") or []]
        out.extend((row["file"], str(t)) for t in texts if t)
    return out


def term_hits(queries: Iterable[AbsentQuery], rows: Iterable[dict[str, Any]]) -> dict[str, list[tuple[str, str, str]]]:
    """query id -> [(term, file, text)] for every catalog text that holds one of its terms; empty lists = absent."""
    texts = catalog_texts(rows)
    out: dict[str, list[tuple[str, str, str]]] = {}
    for q in queries:
        hits = []
        for term in q.terms:
            pattern = re.compile(r"\b" + r"\s+".join(map(re.escape, term.split())), re.IGNORECASE)
            hits += [(term, file, text) for file, text in texts if pattern.search(text)]
        out[q.id] = hits
    return out
