"""Metadata filters as Milvus boolean expressions, built safely.

Values never get pasted into an expression raw. Where the server takes parameter templates (Milvus 2.5+)
they travel as `filter_params`; elsewhere (Milvus Lite 3.2 rejects templates, 2.3/2.4 predate them) a string
becomes a JSON string literal with `ensure_ascii=False`, which Milvus reads back exactly (quotes, backslashes,
newlines, tabs, CJK); `ensure_ascii=True` would emit `\\u` escapes that Milvus rejects.
Each value is first coerced to the type the index recorded for its field, so `flag=maybe` or `score=nan` is
refused with one line instead of matching nothing.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from rag.errors import MmragError

Scalar = str | int | float | bool
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TYPE_NAMES = {"str": str, "int": int, "float": float, "bool": bool}
_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def type_name(value: Any) -> str | None:
    """The filter type of a metadata value (None: not filterable, e.g. lists)."""
    for name in ("bool", "int", "float", "str"):  # bool before int: True is an int too
        if isinstance(value, TYPE_NAMES[name]):
            return name
    return None


def coerce(key: str, raw: Scalar, kind: str) -> Scalar:
    """raw (usually a CLI string) as the recorded type of field key, or one clear error."""
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        value = _BOOL.get(str(raw).strip().lower())
        if value is None:
            raise MmragError(f"filter {key}={raw!r}: {key} holds true/false values")
        return value
    if kind in ("int", "float"):
        try:
            number: int | float = int(str(raw).strip()) if kind == "int" else float(str(raw).strip())
        except ValueError:
            raise MmragError(f"filter {key}={raw!r}: {key} holds {kind} values") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise MmragError(f"filter {key}={raw!r}: only finite numbers can be matched")
        return number
    return str(raw)


@dataclass
class Filter:
    """A Milvus expression and its template parameters (empty when the server takes none)."""

    expr: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"filter": self.expr}
        if self.params:
            out["filter_params"] = self.params
        return out

    def and_(self, other: "Filter") -> "Filter":
        exprs = [e for e in (self.expr, other.expr) if e]
        return Filter(" and ".join(f"({e})" for e in exprs) if len(exprs) > 1 else "".join(exprs),
                      {**self.params, **other.params})


def literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def build_filter(filters: Mapping[str, Scalar] | None, types: Mapping[str, str], *, templates: bool,
                 reserved: Iterable[str] = ()) -> Filter:
    """Equality on each metadata field (AND), values coerced to the recorded types."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    reserved = set(reserved)
    for i, (key, raw) in enumerate((filters or {}).items()):
        if key in reserved or not FIELD_NAME.fullmatch(key):
            raise MmragError(f"cannot filter on {key!r}; filterable fields: {', '.join(sorted(types)) or 'none'}")
        kind = types.get(key)
        if kind is None:
            known = ", ".join(sorted(types)) or "none (the catalog has no filterable fields)"
            raise MmragError(f"unknown filter field {key!r}; filterable fields: {known}")
        value = coerce(key, raw, kind)
        if templates:
            clauses.append(f"{key} == {{f{i}}}")
            params[f"f{i}"] = value
        else:
            clauses.append(f"{key} == {literal(value)}")
    return Filter(" and ".join(clauses), params)


def exclusion_filter(text_field: str, groups: list[list[frozenset[str]]]) -> Filter:
    """The tokenised text (rag.bm25 tokens, space-separated) holds no group completely; a group is one negative
    query part's tokens, each satisfied by any of its synonyms. Tokens are [a-z0-9]+, safe to inline. Needs infix
    LIKE (Milvus Lite, 2.4+); a whole-token match is one of four forms."""
    def holds(token: str) -> str:
        return (f'({text_field} == "{token}" or {text_field} like "{token} %" or {text_field} like "% {token}" '
                f'or {text_field} like "% {token} %")')

    clauses = []
    for group in groups:
        alternatives = [" or ".join(holds(t) for t in sorted(synonyms)) for synonyms in group]
        clauses.append(" and ".join(f"({a})" for a in alternatives))
    return Filter("not (" + " or ".join(f"({c})" for c in clauses) + ")" if clauses else "")


def ids_filter(field_name: str, ids: Iterable[str], *, negate: bool = False, templates: bool = False) -> Filter:
    ids = sorted(set(ids))
    if not ids:
        return Filter()
    op = "not in" if negate else "in"
    if templates:
        return Filter(f"{field_name} {op} {{ids}}", {"ids": ids})
    return Filter(f"{field_name} {op} [{', '.join(literal(i) for i in ids)}]")
