"""The query as editable chips, and captions with the matched query terms highlighted (pure helpers)."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from rag.bm25 import tokenize
from rag.channels import QueryPart
from rag.errors import MmragError
from rag.query_parser import format_part, parse_chip

_WORD = re.compile(r"[A-Za-z0-9]+")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def chips_of(parts: Iterable[QueryPart]) -> list[str]:
    """One chip per part: '+ a street', '- people', '+ 2:beach'."""
    return [format_part(p) for p in parts]


def parts_of(chips: Sequence[str]) -> list[QueryPart]:
    """Chips back to parts (a chip typed by hand may omit its sign: it is then positive)."""
    parts = [parse_chip(chip) for chip in chips if chip.strip()]
    if not parts:
        raise MmragError("no query parts left: add one, e.g. 'dog' or '- people'")
    if not any(not p.negative for p in parts):
        raise MmragError("only negative query parts: add something to look for")
    return parts


def escape_markdown(text: str) -> str:
    return _MARKDOWN.sub(r"\\\1", text)


def highlight(caption: str, terms: Iterable[str]) -> str:
    """The caption as Markdown with each word whose BM25 token is in `terms` in bold (the rest escaped)."""
    wanted = set(terms)
    out: list[str] = []
    pos = 0
    for m in _WORD.finditer(caption):
        out.append(escape_markdown(caption[pos:m.start()]))
        word = m.group(0)
        tokens = tokenize(word)
        out.append(f"**{word}**" if tokens and tokens[0] in wanted else escape_markdown(word))
        pos = m.end()
    out.append(escape_markdown(caption[pos:]))
    return "".join(out)
