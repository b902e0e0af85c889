"""Metadata filters for the app: parse 'key=value; key2=value2' and offer choices found in the catalog."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from rag.errors import MmragError

ANY = "(any)"
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Split on ';' or newlines, and on commas that start a new 'key=' (so values may contain commas).
_SPLIT_RE = re.compile(r"[;\n]|,(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)")


def parse_filters(text: str | None) -> dict[str, str]:
    """'source=coco2017; categories_known=true' -> {'source': 'coco2017', 'categories_known': 'true'}.

    Raises MmragError naming the bad piece: no '=', an invalid key, an empty value, or a key given twice.
    """
    filters: dict[str, str] = {}
    for piece in (p.strip() for p in _SPLIT_RE.split(text or "")):
        if not piece:
            continue
        key, sep, value = piece.partition("=")
        key, value = key.strip(), value.strip().strip("\"'")
        if not sep:
            raise MmragError(f"bad filter {piece!r}: expected KEY=VALUE, e.g. source=coco2017")
        if not _KEY_RE.fullmatch(key):
            raise MmragError(f"bad filter key {key!r}: use letters, digits and _ (e.g. source)")
        if not value:
            raise MmragError(f"filter {key!r} has no value")
        if key in filters and filters[key] != value:
            raise MmragError(f"filter {key!r} given twice ({filters[key]!r} and {value!r})")
        filters[key] = value
    return filters


def format_filters(filters: Mapping[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in filters.items())


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def filter_choices(
    metadata: Iterable[Mapping[str, Any]], *, max_values: int = 30, skip: Iterable[str] = ()
) -> dict[str, list[str]]:
    """Keys whose scalar values repeat enough to be worth a drop-down: key -> sorted values (most common first).

    A key is offered when it has 2..max_values distinct values and its values repeat (on average
    at least twice), which keeps out ids and sizes; keys holding URLs are left out. Keys set on most
    records come first.
    """
    skipped = set(skip)
    counts: dict[str, Counter[str]] = {}
    rows = 0
    for row in metadata:
        rows += 1
        for key, value in row.items():
            text = _scalar_text(value)
            if key in skipped or text is None or not _KEY_RE.fullmatch(str(key)):
                continue
            counts.setdefault(key, Counter())[text] += 1
    choices: dict[str, list[str]] = {}
    for key in sorted(counts, key=lambda name: (-sum(counts[name].values()), name)):
        counter = counts[key]
        if any(value.startswith(("http://", "https://")) for value in counter):
            continue
        if 2 <= len(counter) <= max_values and sum(counter.values()) >= 2 * len(counter):
            choices[key] = [value for value, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]
    return choices


def merge_filters(selected: Mapping[str, str | None], typed: Mapping[str, str]) -> dict[str, str]:
    """Drop-down picks (ANY/None ignored) plus typed filters; a conflict on one key is an error."""
    merged = {k: v for k, v in selected.items() if v not in (None, "", ANY)}
    for key, value in typed.items():
        if key in merged and merged[key] != value:
            raise MmragError(f"filter {key!r} is both {merged[key]!r} (drop-down) and {value!r} (typed)")
        merged[key] = value
    return merged


def matches(metadata: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
    """Whether a record's metadata satisfies every filter (values compared as text, booleans as true/false)."""
    return all(_scalar_text(metadata.get(k)) == v for k, v in filters.items())
