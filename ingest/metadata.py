"""Catalog sidecar (JSONL or CSV): per-image caption text fields and scalar catalog fields for filters."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rag.errors import MmragError

log = logging.getLogger(__name__)

PATH_KEYS = ("file", "path", "filename", "image")
# Caption text fields, grouped in the order their text enters the caption.
TEXT_FIELD_GROUPS: tuple[tuple[str, ...], ...] = (
    ("title",),
    ("alt", "alt_text"),
    ("caption", "captions"),
    ("description",),
    ("tags", "keywords"),
)
TEXT_FIELDS = frozenset(name for group in TEXT_FIELD_GROUPS for name in group)
# Store fields, plus the keys the index pipeline writes next to the catalog fields (it would overwrite them).
RESERVED_KEYS = frozenset({
    "id", "path", "caption", "caption_sources", "text", "embedding", "doc_id",
    "file_name", "folder", "clip_model", "text_model",
})

Scalar = str | int | float | bool
_INT_RE = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?[0-9]+[eE][+-]?[0-9]+")
_TAG_SPLIT_RE = re.compile(r"\s*[,;|]\s*")
_EXTRA = "\x00extra"  # DictReader restkey: cells beyond the header


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def as_sentence(text: str) -> str:
    """Whitespace-collapsed text ending in terminal punctuation ('' stays '')."""
    text = _clean(text).rstrip(". ")  # 'condiments..' -> 'condiments.'
    if text and text[-1] not in "!?":
        text += "."
    return text


def join_sentences(pieces: list[str]) -> str:
    """'A. B. C.' from pieces, skipping empty ones and repeats (case/final-punctuation insensitive)."""
    seen: set[str] = set()
    out: list[str] = []
    for piece in pieces:
        sentence = as_sentence(piece)
        key = sentence.rstrip(".!?").casefold()
        if sentence and key not in seen:
            seen.add(key)
            out.append(sentence)
    return " ".join(out)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value if v is not None and not isinstance(v, (dict, list)) and _clean(v)]
    if isinstance(value, dict):
        return []
    text = _clean(value)
    return [text] if text else []


def caption_text(row: dict[str, Any]) -> str:
    """The caption text of one sidecar row: title, alt text, captions, description, then 'tags: a, b'."""
    pieces: list[str] = []
    lowered = {str(k).strip().lower(): v for k, v in row.items()}
    for group in TEXT_FIELD_GROUPS:
        for name in group:
            values = _as_list(lowered.get(name))
            if name in ("tags", "keywords"):
                tags = [t for v in values for t in _TAG_SPLIT_RE.split(v) if t]
                if tags:
                    pieces.append("tags: " + ", ".join(dict.fromkeys(tags)))
            else:
                pieces.extend(values)
    return join_sentences(pieces)


def sanitize_key(key: str) -> str:
    """A field name usable as a Milvus dynamic field: [A-Za-z_][A-Za-z0-9_]*, reserved names prefixed 'meta_'."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(key).strip())
    if not name:
        return ""
    if name[0].isdigit():
        name = "_" + name
    if name.lower() in RESERVED_KEYS:
        name = "meta_" + name
    return name


def _coerce_csv(value: str) -> Scalar | list[Any] | dict[str, Any] | None:
    """CSV cells are strings: read JSON lists/objects, integers, floats and true/false; '' is no value."""
    text = value.strip()
    if not text:
        return None
    if text[0] in "[{" and text[-1] in "]}":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    if _INT_RE.fullmatch(text):
        return int(text)
    if _FLOAT_RE.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def scalar_fields(row: dict[str, Any], path_key: str | None) -> dict[str, Scalar]:
    """Scalar catalog fields of a row: no caption text fields, no path column, no lists/dicts/None."""
    out: dict[str, Scalar] = {}
    for key, value in row.items():
        raw = str(key).strip()
        if key == path_key or raw.lower() in TEXT_FIELDS:
            continue
        if value is None or isinstance(value, (list, tuple, dict)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if not isinstance(value, (str, int, float, bool)):
            continue
        name = sanitize_key(raw)
        if name and name not in out:
            out[name] = value
    return out


def _normalize_key(text: str) -> str:
    """Sidecar path text as a comparable POSIX path ('./a\\b.jpg' -> 'a/b.jpg')."""
    text = str(text).strip().replace("\\", "/")
    return str(PurePosixPath(os.path.normpath(text)).as_posix()) if text else ""


@dataclass
class Sidecar:
    """A loaded sidecar: rows by normalized path, plus the problems met while reading it."""

    path: Path
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    path_keys: dict[str, str] = field(default_factory=dict)  # row key -> the column that named its path
    problems: list[str] = field(default_factory=list)
    _by_name: dict[str, list[str]] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return Path(os.path.abspath(self.path.parent))

    @classmethod
    def load(cls, path: str | Path) -> "Sidecar":
        path = Path(path)
        if not path.is_file():
            raise MmragError(f"metadata sidecar not found: {path}")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise MmragError(f"metadata sidecar {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except OSError as exc:
            raise MmragError(f"cannot read metadata sidecar {path}: {exc.strerror or exc}") from exc
        sidecar = cls(path=path)
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            sidecar._read_csv(text, "\t" if suffix == ".tsv" else ",")
        elif text.lstrip().startswith("["):
            sidecar._read_json_array(text)
        elif suffix in (".jsonl", ".ndjson", ".json") or text.lstrip().startswith("{"):
            sidecar._read_jsonl(text)
        else:
            sidecar._read_csv(text, ",")
        for problem in sidecar.problems:  # callers show them (builder.metadata_problems); warning would print twice
            log.info("%s", problem)
        return sidecar

    def _problem(self, line: int, message: str, unit: str = "line") -> None:
        self.problems.append(f"{self.path.name} {unit} {line}: {message}")

    def _add(self, line: int, row: dict[str, Any], unit: str = "line") -> None:
        path_key = _path_column(row)
        if path_key is None:
            self._problem(line, f"no image path (expected one of {', '.join(PATH_KEYS)}); skipped", unit)
            return
        key = self._key_for(row[path_key])
        if key in self.rows:
            self._problem(line, f"duplicate entry for {row[path_key]!r}; kept the first", unit)
            return
        self.rows[key] = row
        self.path_keys[key] = path_key
        self._by_name.setdefault(PurePosixPath(key).name, []).append(key)

    def _key_for(self, raw: str) -> str:
        key = _normalize_key(raw)
        if os.path.isabs(key):  # absolute paths inside the sidecar's folder become relative to it
            rel = os.path.relpath(key, self.folder)
            if not rel.startswith(".."):
                key = _normalize_key(rel)
        return key

    def _read_jsonl(self, text: str) -> None:
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                self._problem(number, f"invalid JSON ({exc.msg} at column {exc.colno}); skipped")
                continue
            if not isinstance(row, dict):
                self._problem(number, f"expected a JSON object, got {type(row).__name__}; skipped")
                continue
            self._add(number, row)

    def _read_json_array(self, text: str) -> None:
        """A .json file holding one array of objects; problems name the entry number instead of a line."""
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MmragError(f"metadata sidecar {self.path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(rows, list):
            raise MmragError(f"metadata sidecar {self.path} is a JSON {type(rows).__name__}, expected an array of objects")
        for number, row in enumerate(rows, start=1):
            if isinstance(row, dict):
                self._add(number, row, "entry")
            else:
                self._problem(number, f"expected a JSON object, got {type(row).__name__}; skipped", "entry")

    def _read_csv(self, text: str, delimiter: str) -> None:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, restkey=_EXTRA)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not any(h.lower() in PATH_KEYS for h in header):
            raise MmragError(
                f"metadata sidecar {self.path} has no image path column (expected one of {', '.join(PATH_KEYS)})"
            )
        try:
            for raw in reader:
                number = reader.line_num
                if _EXTRA in raw:
                    cells = len(header) + len(raw[_EXTRA])
                    self._problem(number, f"{cells} cells for {len(header)} columns; skipped")
                    continue
                if any(v is None for v in raw.values()):
                    self._problem(number, f"fewer cells than the {len(header)} columns; skipped")
                    continue
                row = {
                    k.strip(): (v.strip() if k.strip().lower() in PATH_KEYS else _coerce_csv(v))
                    for k, v in raw.items()
                    if k is not None
                }
                self._add(number, {k: v for k, v in row.items() if v is not None})
        except csv.Error as exc:
            self._problem(reader.line_num, f"unreadable CSV ({exc}); rest of the file skipped")

    def lookup(self, path: str | Path, root: str | Path | None = None) -> dict[str, Any] | None:
        """The row for an image: by path relative to the sidecar's folder, then relative to root, then basename."""
        key = self.match(path, root)
        return None if key is None else self.rows[key]

    def match(self, path: str | Path, root: str | Path | None = None) -> str | None:
        path = Path(path)
        absolute = Path(os.path.abspath(path))
        candidates = [_relative(absolute, self.folder)]
        if root is not None:
            root_abs = Path(os.path.abspath(root))
            if not path.is_absolute():
                candidates.append(_relative(root_abs / path, self.folder))
                candidates.append(_normalize_key(path.as_posix()))
            candidates.append(_relative(absolute, root_abs))
        for key in candidates:
            if key and key in self.rows:
                return key
        named = self._by_name.get(path.name, [])
        return named[0] if len(named) == 1 else None

    def caption_text(self, path: str | Path, root: str | Path | None = None) -> str:
        row = self.lookup(path, root)
        return caption_text(row) if row else ""

    def catalog_fields(self, path: str | Path, root: str | Path | None = None) -> dict[str, Scalar]:
        key = self.match(path, root)
        return {} if key is None else scalar_fields(self.rows[key], self.path_keys[key])


def _path_column(row: dict[str, Any]) -> str | None:
    """The row's image path column (first of PATH_KEYS, case-insensitive) holding a non-empty string."""
    by_lower = {str(k).strip().lower(): k for k in row}
    for name in PATH_KEYS:
        key = by_lower.get(name)
        if key is not None and isinstance(row[key], str) and row[key].strip():
            return key
    return None


def _relative(path: Path, folder: Path) -> str | None:
    try:
        return _normalize_key(path.relative_to(folder).as_posix())
    except ValueError:
        return None
