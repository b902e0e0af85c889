"""How the app shows a grounded answer: citations become links to the result cards of the same turn."""

from __future__ import annotations

import re
from typing import Sequence

from rag.ask import Source

_GROUP = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def card_anchor(turn_id: int, number: int) -> str:
    return f"card-{turn_id}-{number}"


def link_citations(text: str, turn_id: int, sources: Sequence[Source]) -> str:
    """Markdown: [n] of a sent result links to its card; any other [n] is marked ⚠ (see the warnings below it)."""
    sent = {s.number for s in sources if s.sent}

    def one(number: int) -> str:
        if number in sent:
            return f"[\\[{number}\\]](#{card_anchor(turn_id, number)})"
        return f"\\[{number}\\]⚠"

    return _GROUP.sub(lambda m: "".join(one(int(n)) for n in m.group(1).split(",")), text)
