"""Gold queries: category expressions, relevance from catalog metadata, load + validate.

A query's relevance is never written by hand: a person writes the query texts and a category
expression over COCO instance categories ("cat & laptop", "dog & !person", "person>=5",
"baseball bat | baseball glove"); `compute_relevance` turns it into image files using only the
catalog rows whose categories are judged (see `judged_pool`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rag.errors import MmragError

# Grammar:  expr := term ('|' term)* ; term := factor ('&' factor)* ;
#           factor := '!' factor | '(' expr ')' | NAME [('>=' | '=') INT]
_TOKEN = re.compile(r"\s*(?:(?P<op>[|&!()])|(?P<cmp>>=|=)\s*(?P<num>\d+)|(?P<name>[A-Za-z][A-Za-z ]*[A-Za-z]|[A-Za-z]))")

Predicate = Callable[[dict[str, int]], bool]


class GoldError(MmragError):
    """The gold query file is malformed or does not match the catalog."""


def _tokenize(expr: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    text = expr.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise GoldError(f"bad category expression {expr!r}: cannot parse at {text[pos:]!r}")
        if m.group("op"):
            tokens.append(("op", m.group("op")))
        elif m.group("cmp"):
            tokens.append(("cmp", (m.group("cmp"), int(m.group("num")))))
        else:
            tokens.append(("name", " ".join(m.group("name").split())))
        pos = m.end()
    return tokens


def expr_categories(expr: str) -> tuple[list[str], list[str]]:
    """(positive, negated) category names of a category expression (a name under '!', or in a group under '!',
    counts as negated)."""
    pos: list[str] = []
    neg: list[str] = []
    stack: list[bool] = []
    pending = False
    for kind, value in _tokenize(expr):
        if (kind, value) == ("op", "!"):
            pending = True
        elif (kind, value) == ("op", "("):
            stack.append(pending or (stack[-1] if stack else False))
            pending = False
        elif (kind, value) == ("op", ")"):
            if stack:
                stack.pop()
        elif kind == "name":
            (neg if pending or (stack and stack[-1]) else pos).append(value)
            pending = False
    return pos, neg


def parse_expr(expr: str, vocabulary: set[str] | None = None) -> tuple[Predicate, set[str]]:
    """Compile a category expression into a predicate over category counts.

    Returns (predicate, category names used). Unknown names (not in `vocabulary`) raise GoldError.
    """
    tokens = _tokenize(expr)
    if not tokens:
        raise GoldError(f"empty category expression {expr!r}")
    names: set[str] = set()
    pos = 0

    def peek() -> tuple[str, Any] | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> tuple[str, Any]:
        nonlocal pos
        tok = peek()
        if tok is None:
            raise GoldError(f"bad category expression {expr!r}: ends too early")
        pos += 1
        return tok

    def parse_or() -> Predicate:
        parts = [parse_and()]
        while peek() == ("op", "|"):
            take()
            parts.append(parse_and())
        return parts[0] if len(parts) == 1 else (lambda c, ps=tuple(parts): any(p(c) for p in ps))

    def parse_and() -> Predicate:
        parts = [parse_factor()]
        while peek() == ("op", "&"):
            take()
            parts.append(parse_factor())
        return parts[0] if len(parts) == 1 else (lambda c, ps=tuple(parts): all(p(c) for p in ps))

    def parse_factor() -> Predicate:
        kind, value = take()
        if (kind, value) == ("op", "!"):
            inner = parse_factor()
            return lambda c: not inner(c)
        if (kind, value) == ("op", "("):
            inner = parse_or()
            if take() != ("op", ")"):
                raise GoldError(f"bad category expression {expr!r}: missing ')'")
            return inner
        if kind != "name":
            raise GoldError(f"bad category expression {expr!r}: unexpected {value!r}")
        if vocabulary is not None and value not in vocabulary:
            raise GoldError(f"unknown category {value!r} in expression {expr!r}")
        names.add(value)
        if peek() is not None and peek()[0] == "cmp":
            op, n = take()[1]
            return (lambda c, v=value, n=n: c.get(v, 0) >= n) if op == ">=" else (lambda c, v=value, n=n: c.get(v, 0) == n)
        return lambda c, v=value: c.get(v, 0) > 0

    predicate = parse_or()
    if pos != len(tokens):
        raise GoldError(f"bad category expression {expr!r}: unexpected {tokens[pos][1]!r}")
    return predicate, names


def read_metadata(path: Path) -> list[dict[str, Any]]:
    """Read a metadata.jsonl sidecar (one JSON object per image, field 'file')."""
    if not path.is_file():
        raise GoldError(f"catalog metadata not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise GoldError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    return rows


def judged_pool(rows: list[dict[str, Any]], sources: tuple[str, ...] = ("coco2017",)) -> list[dict[str, Any]]:
    """Rows whose instance categories are complete enough to judge: COCO rows with categories_known.

    Open Images rows carry sparse boxes (not every visible object is labelled), so absence of a
    label there is no evidence of absence; they stay unjudged.
    """
    return [r for r in rows if r.get("categories_known") and r.get("source") in sources]


def category_counts(row: dict[str, Any]) -> dict[str, int]:
    counts = row.get("category_counts") or {}
    return {c: int(counts.get(c, 1)) for c in row.get("categories", [])}


def compute_relevance(expr: str, pool: list[dict[str, Any]], vocabulary: set[str] | None = None) -> list[str]:
    """Files in the judged pool whose categories satisfy the expression, sorted."""
    predicate, _ = parse_expr(expr, vocabulary)
    return sorted(r["file"] for r in pool if predicate(category_counts(r)))


@dataclass(frozen=True)
class GoldQuery:
    id: str
    short: str
    descriptive: str
    expr: str
    relevant: frozenset[str]
    tags: tuple[str, ...] = ()
    note: str = ""
    composite: str = ""  # the query in composite syntax (rag.query_parser), for queries written for it

    def text(self, form: str) -> str:
        if form not in ("short", "descriptive"):
            raise GoldError(f"unknown query form {form!r}: expected short or descriptive")
        return self.short if form == "short" else self.descriptive


@dataclass(frozen=True)
class GoldSet:
    queries: list[GoldQuery]
    judged: frozenset[str]
    path: Path | None = None
    relevance_source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def subset(self, ids: list[str]) -> "GoldSet":
        keep = set(ids)
        return GoldSet([q for q in self.queries if q.id in keep], self.judged, self.path, self.relevance_source, self.meta)


_REQUIRED = ("id", "short", "descriptive", "expr", "relevant")


def parse_gold(data: Any, *, catalog_files: set[str] | None = None, where: str = "gold file") -> GoldSet:
    """Validate a decoded gold document; every problem is a GoldError naming the query."""
    if not isinstance(data, dict) or not isinstance(data.get("queries"), list):
        raise GoldError(f"{where}: expected a JSON object with a 'queries' list")
    judged = data.get("judged")
    if not isinstance(judged, list) or not judged:
        raise GoldError(f"{where}: 'judged' must be the non-empty list of judged image files")
    judged_set = frozenset(judged)
    if catalog_files is not None:
        unknown = sorted(judged_set - catalog_files)
        if unknown:
            raise GoldError(f"{where}: {len(unknown)} judged file(s) not in the catalog, e.g. {unknown[0]!r}")
    if not data["queries"]:
        raise GoldError(f"{where}: no queries")
    queries: list[GoldQuery] = []
    seen: set[str] = set()
    for i, q in enumerate(data["queries"]):
        if not isinstance(q, dict):
            raise GoldError(f"{where}: query #{i + 1} is not an object")
        missing = [k for k in _REQUIRED if k not in q]
        qid = str(q.get("id", f"#{i + 1}"))
        if missing:
            raise GoldError(f"{where}: query {qid} lacks {', '.join(missing)}")
        if qid in seen:
            raise GoldError(f"{where}: duplicate query id {qid}")
        seen.add(qid)
        for key in ("short", "descriptive", "expr"):
            if not isinstance(q[key], str) or not q[key].strip():
                raise GoldError(f"{where}: query {qid} has an empty {key!r}")
        parse_expr(q["expr"])  # syntax check; names are checked against the catalog by the builder
        relevant = q["relevant"]
        if not isinstance(relevant, list) or not relevant:
            raise GoldError(f"{where}: query {qid} has no relevant images (empty relevance cannot be scored)")
        if catalog_files is not None:
            unknown = sorted(set(relevant) - catalog_files)
            if unknown:
                raise GoldError(f"{where}: query {qid} names unknown file {unknown[0]!r} (not in the catalog)")
        outside = sorted(set(relevant) - judged_set)
        if outside:
            raise GoldError(f"{where}: query {qid} marks {outside[0]!r} relevant but it is not in the judged pool")
        if not isinstance(q.get("composite", ""), str):
            raise GoldError(f"{where}: query {qid} has a non-text 'composite'")
        queries.append(GoldQuery(qid, q["short"].strip(), q["descriptive"].strip(), q["expr"], frozenset(relevant),
                                 tuple(q.get("tags", [])), q.get("note", ""), q.get("composite", "").strip()))
    meta = {k: v for k, v in data.items() if k not in ("queries", "judged")}
    return GoldSet(queries, judged_set, None, str(data.get("relevance_source", "")), meta)


def load_gold(path: Path, *, catalog_files: set[str] | None = None) -> GoldSet:
    """Load and validate a gold query file; catalog_files (e.g. 'images/x.jpg') enables the unknown-file check."""
    path = Path(path)
    if not path.is_file():
        raise GoldError(f"gold query file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GoldError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    gold = parse_gold(data, catalog_files=catalog_files, where=str(path))
    return GoldSet(gold.queries, gold.judged, path, gold.relevance_source, gold.meta)


def catalog_files_of(catalog_dir: Path, metadata: Path | None = None) -> set[str]:
    """Files the catalog holds, as the metadata names them ('images/x.jpg'), checked on disk."""
    rows = read_metadata(metadata or catalog_dir / "metadata.jsonl")
    return {r["file"] for r in rows if (catalog_dir / r["file"]).is_file()}
