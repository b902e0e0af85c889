"""Query text -> weighted parts: the composite syntax and automatic negation of plain English queries.

Composite syntax (like rclip's): terms joined by `+` or `-`, each with an optional weight `N:`:

    2:dog + beach - people        "red car" - "parking lot"        ./ref.jpg + snow

An operator is a `+`/`-` standing alone (space or quote on both sides), so "T-shirt", "3-4 people" and
"C++" stay text. A weight is a number and a colon glued to its term ("2:dog"; "10:30" is text). A term
ending in an image suffix (".jpg", ...) with no space in it is an image part. A quoted term is literal.

Automatic negation (plain, unquoted positive terms only): "no X", "without X", "not X", and "nobody" /
"no one" (X = people) become negative parts; the rest stays one positive part:
"a dog with no people around" -> +"a dog", -"people". It is conservative on purpose: idioms ("not only",
"no longer", "No. 5", "no parking sign"), names ("Noah") and queries that would keep nothing positive
are left unchanged. English only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from rag.bm25 import tokenize
from rag.channels import QueryPart
from rag.errors import MmragError

MAX_WEIGHT = 100.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PEOPLE = "people"
# What "nobody"/"no people" excludes lexically: the words captions use for a person (BM25 has no synonyms).
PERSON_WORDS = frozenset(tokenize("person people man men woman women boy girl child children kid guy lady "
                                  "player nobody human"))

_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "−": "-"})
_WEIGHT = re.compile(r"^(\d+(?:\.\d+)?|\.\d+):(?=[^\d\s]|$)")
_OPERATOR = re.compile(r'(?:^|(?<=[\s"]))[+-](?=[\s"]|$)')


@dataclass(frozen=True)
class Negation:
    """A negation found in a plain query: its cue word(s) and the excluded phrase."""

    cue: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"cue": self.cue, "text": self.text}


@dataclass(frozen=True)
class ParsedQuery:
    parts: tuple[QueryPart, ...]
    negations: tuple[Negation, ...] = ()
    composite: bool = False  # operators or weights were used


# ---------------------------------------------------------------- composite syntax


@dataclass
class _Term:
    pieces: list[tuple[str, bool]] = field(default_factory=list)  # (text, quoted)
    sign: int = 1


def _lex(text: str) -> list[tuple[str, str]]:
    """('op', '+'|'-'), ('text', s) and ('quoted', s) tokens."""
    tokens: list[tuple[str, str]] = []
    pos, buf = 0, []
    while pos < len(text):
        ch = text[pos]
        if ch == '"':
            end = text.find('"', pos + 1)
            if end < 0:
                raise MmragError(f"unclosed quote in query {text!r}")
            if buf:
                tokens.append(("text", "".join(buf)))
                buf = []
            tokens.append(("quoted", text[pos + 1:end]))
            pos = end + 1
            continue
        if ch in "+-" and _is_operator(text, pos):
            if buf:
                tokens.append(("text", "".join(buf)))
                buf = []
            tokens.append(("op", ch))
        else:
            buf.append(ch)
        pos += 1
    if buf:
        tokens.append(("text", "".join(buf)))
    return [(kind, value) for kind, value in tokens if kind != "text" or value.strip()]


def _is_operator(text: str, pos: int) -> bool:
    before = pos == 0 or text[pos - 1].isspace() or text[pos - 1] == '"'
    after = pos + 1 == len(text) or text[pos + 1].isspace() or text[pos + 1] == '"'
    return before and after


def _terms(text: str, tokens: list[tuple[str, str]]) -> list[_Term]:
    terms: list[_Term] = []
    current: _Term | None = _Term()
    pending_op: str | None = None
    for kind, value in tokens:
        if kind == "op":
            if current is not None and current.pieces:
                terms.append(current)
                current = None
            elif pending_op is not None:
                raise MmragError(f"two operators in a row ('{pending_op} {value}') in query {text!r}: put a term between them")
            pending_op = value
            current = None
            continue
        if current is None:
            current = _Term(sign=-1 if pending_op == "-" else 1)
        pending_op = None
        current.pieces.append((value, kind == "quoted"))
    if pending_op is not None:
        raise MmragError(f"dangling '{pending_op}' at the end of query {text!r}: put a term after it")
    if current is not None and current.pieces:
        terms.append(current)
    return terms


def _part(term: _Term, source: str) -> tuple[QueryPart, bool, bool]:
    """(part, weighted, literal) of one term."""
    pieces = list(term.pieces)
    weight = 1.0
    weighted = False
    first, quoted = pieces[0]
    if not quoted:
        stripped = first.lstrip()
        m = _WEIGHT.match(stripped)
        if m:
            weight = float(m.group(1))
            weighted = True
            if not 0 < weight <= MAX_WEIGHT:
                raise MmragError(f"bad weight {m.group(1)!r} in query {source!r}: a weight is a number above 0 and at "
                                 f"most {MAX_WEIGHT:g}, glued to its term (2:dog)")
            pieces[0] = (stripped[m.end():], False)
    literal = any(q for _, q in pieces)
    text = " ".join(" ".join(p.split()) for p, _ in pieces if p.strip())
    if not text:
        raise MmragError(f"empty term in query {source!r}" + (" after its weight" if weighted else ""))
    is_image = not literal or len(pieces) == 1
    if is_image and " " not in text and text.lower().endswith(IMAGE_SUFFIXES):
        return QueryPart(image=text, weight=term.sign * weight), weighted, True
    return QueryPart(text=text, weight=term.sign * weight), weighted, literal


def parse_query(text: str, *, negation: bool = True) -> ParsedQuery:
    """Parse a query string into parts; MmragError (one line) for malformed composite syntax.

    negation: detect "no X" / "without X" / "not X" / "nobody" in plain positive terms.
    """
    source = " ".join(text.translate(_QUOTES).split())
    if not source:
        raise MmragError("empty query")
    try:
        tokens = _lex(source)
    except MmragError:
        if _OPERATOR.search(source):
            raise
        tokens = [("text", source)]  # a stray quote in a plain query ("a 5\" screen") is just a character
    terms = _terms(source, tokens)
    if not terms:
        raise MmragError(f"query {source!r} has no terms")
    has_ops = any(kind == "op" for kind, _ in tokens)
    parts: list[QueryPart] = []
    negations: list[Negation] = []
    composite = has_ops
    for term in terms:
        part, weighted, literal = _part(term, source)
        composite = composite or weighted
        if negation and part.text and not part.negative and not literal:
            positive, found = detect_negations(part.text)
            if found:
                parts.append(QueryPart(text=positive, weight=part.weight))
                parts.extend(QueryPart(text=n.text, weight=-abs(part.weight)) for n in found)
                negations.extend(found)
                continue
        parts.append(part)
    if not any(not p.negative for p in parts):
        raise MmragError(f"query {source!r} has only negative terms: add something to look for (dog - people)")
    return ParsedQuery(tuple(parts), tuple(negations), composite)


def parse_chip(text: str) -> QueryPart:
    """One part written alone, as the app's chips and --plus/--minus take it: '[+|-] [N:]term'."""
    source = " ".join(text.translate(_QUOTES).split())
    sign = 1
    if source[:1] in "+-":
        sign, source = (-1 if source[0] == "-" else 1), source[1:].strip()
    if not source:
        raise MmragError(f"empty query part {text!r}")
    tokens = _lex(source)
    if any(kind == "op" for kind, _ in tokens):
        raise MmragError(f"query part {text!r} holds an operator: give one term per part")
    part, _, _ = _part(_Term([(v, kind == "quoted") for kind, v in tokens], sign), source)
    return part


def format_part(part: QueryPart) -> str:
    """A part as a chip / term: '+ dog', '- people', '+ 2:beach', '+ /path/ref.jpg'."""
    sign = "-" if part.negative else "+"
    weight = abs(part.weight)
    value = part.image or part.text or ""
    if part.text and (any(c in value for c in "+-:\"") or value.lower().endswith(IMAGE_SUFFIXES)):
        value = '"' + value.replace('"', "'") + '"'
    return f"{sign} {'' if weight == 1 else f'{weight:g}:'}{value}"


def format_query(parts: Sequence[QueryPart]) -> str:
    """Parts back to one composite query string (parse_query(format_query(p), negation=False) gives p back)."""
    text = " ".join(format_part(p) for p in parts)
    return text[2:] if text.startswith("+ ") else text


def parts_to_dicts(parts: Iterable[QueryPart]) -> list[dict[str, Any]]:
    return [{"text": p.text, "image": p.image, "weight": p.weight} for p in parts]


# ---------------------------------------------------------------- lexical negatives (BM25)


def negative_term_groups(parts: Iterable[QueryPart]) -> list[list[frozenset[str]]]:
    """Per negative text part, the BM25 tokens a document must all hold to be excluded (each token may be
    any of its synonyms: a person word stands for all of PERSON_WORDS)."""
    groups = []
    for part in parts:
        if not part.negative or not part.text:
            continue
        tokens = list(dict.fromkeys(tokenize(part.text)))
        if tokens:
            groups.append([PERSON_WORDS if t in PERSON_WORDS else frozenset({t}) for t in tokens])
    return groups


def matched_terms(parts: Iterable[QueryPart], text: str) -> list[str]:
    """The positive parts' BM25 tokens that `text` holds, in query order (the JSON `matched_terms`)."""
    held = set(tokenize(text or ""))
    wanted = [t for p in parts if p.text and not p.negative for t in tokenize(p.text)]
    return [t for t in dict.fromkeys(wanted) if t in held]


# ---------------------------------------------------------------- automatic negation

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")
_DETERMINERS = {"a", "an", "the", "any", "single", "other", "some", "more", "of", "its", "their", "his", "her"}
# Words that end the negated phrase (it is a short noun phrase: up to three words).
_BOUNDARY = {
    "in", "on", "at", "with", "near", "by", "under", "over", "from", "behind", "beside", "inside", "outside", "into",
    "onto", "around", "above", "below", "along", "across", "through", "during", "against", "between", "next",
    "and", "but", "or", "nor", "so", "yet", "that", "which", "who", "whose", "where", "while", "when", "as", "than",
    "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "to", "for", "of", "there", "here",
    "it", "them", "this", "these", "those", "just", "only", "nearby", "present", "visible", "anywhere", "about",
    "all", "either", "neither", "no", "not", "without", "nobody", "anymore",
}
# After the phrase: words that only say "absent" ("no people around", "nobody in sight").
_FILLERS = [
    ("in", "the", "picture"), ("in", "the", "photo"), ("in", "the", "image"), ("in", "the", "shot"),
    ("in", "the", "frame"), ("in", "the", "scene"), ("in", "the", "background"), ("in", "sight"), ("in", "view"),
    ("at", "all"), ("on", "it"), ("in", "it"), ("around",), ("nearby",), ("present",), ("visible",), ("anywhere",),
    ("about",), ("there",), ("inside",), ("around", "it"), ("around", "them"),
]
# Glue before a cue that belongs to the negation ("a dog *with* no people", "a cat *but* not a dog").
_GLUE = {"with", "and", "but", "where", "there", "is", "are", "that", "which", "has", "have", "having", "showing",
         "containing", "contains", ","}
_NO_IDIOMS = {"longer", "more", "less", "matter", "doubt", "way", "problem", "sooner", "further", "need", "thanks",
              "idea", "wonder", "big", "fewer", "later", "earlier", "one's"}
_SIGNS = {"parking", "smoking", "entry", "trespassing", "stopping", "swimming", "littering", "exit", "passing",
          "standing", "dumping", "fishing", "camping", "turn", "u-turn", "thru", "outlet", "vacancy", "left", "right"}
_NOT_SKIP = {"only", "just", "merely", "necessarily", "quite", "very", "too", "so", "as", "much", "many", "all",
             "even", "yet", "really", "sure", "bad", "far", "long", "always", "exactly", "simply", "least", "to",
             "at", "in", "on", "with", "by", "for", "from", "under", "over", "near", "into", "out", "that", "this",
             "enough", "one", "be", "have", "being", "nearly", "entirely", "completely", "fully", "until"}
_NOT_BEFORE = {"if", "or", "whether", "why", "do", "does", "did", "could", "would", "should", "can", "will"}
_PERSON_CUES = {"nobody", "noone", "no-one"}
_SIGN_WORDS = {"sign", "signs", "zone", "board", "symbol", "logo"}


def detect_negations(text: str) -> tuple[str, list[Negation]]:
    """(positive remainder, negations) of a plain query; ("text unchanged", []) when none is found or nothing
    positive would remain."""
    tokens = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(text)]
    low = [t[0].lower() for t in tokens]
    removed: set[int] = set()
    found: list[Negation] = []
    i = 0
    while i < len(tokens):
        span = _negation_at(low, i)
        if span is None:
            i += 1
            continue
        start, end, cue, phrases = span
        while start > 0 and low[start - 1] in _GLUE and start - 1 not in removed:
            start -= 1
        removed.update(range(start, end))
        found.extend(Negation(cue, " ".join(tokens[j][0] for j in ph)) if ph else Negation(cue, PEOPLE) for ph in phrases)
        i = end
    if not found:
        return text, []
    kept = [tokens[j] for j in range(len(tokens)) if j not in removed]
    while kept and kept[-1][0].lower() in _GLUE | {",", ".", ";", ":"}:
        kept.pop()
    if not any(t[0][0].isalnum() and t[0].lower() not in _DETERMINERS | _BOUNDARY for t in kept):
        return text, []
    return _join(kept), found


def _join(kept: list[tuple[str, int, int]]) -> str:
    """The kept tokens as text: spaced as in the query, punctuation glued to the word before it."""
    out: list[str] = []
    last_end = None
    for word, start, end in kept:
        if out and start != last_end and (word[0].isalnum() or word[0] in "\"'("):
            out.append(" ")
        out.append(word)
        last_end = end
    return "".join(out)


def _negation_at(low: list[str], i: int) -> tuple[int, int, str, list[list[int]]] | None:
    """(start, end, cue, phrases as token index lists; [] = people) of a negation starting at token i."""
    w = low[i]
    nxt = low[i + 1] if i + 1 < len(low) else ""
    if i > 0 and low[i - 1] in ("'", "‘", '"'):  # quoted words name something: 'no dogs allowed' sign
        return None
    if w in _PERSON_CUES or (w == "no" and nxt == "one"):
        end = i + (2 if w == "no" else 1)
        if end < len(low) and low[end] == "of":  # "no one of them"
            return None
        return i, _skip_fillers(low, end), "no one" if w != "nobody" else "nobody", [[]]
    if w == "no":
        if not nxt or not nxt[0].isalpha() or nxt in _NO_IDIOMS:  # "No. 5", "no longer", "No, ..."
            return None
        cue = "no"
    elif w == "without":
        if nxt in ("a", "any") and i + 2 < len(low) and low[i + 2] == "doubt":
            return None
        cue = "without"
    elif w == "not":
        if nxt in _NOT_SKIP or (i > 0 and low[i - 1] in _NOT_BEFORE) or not nxt[:1].isalpha():
            return None
        cue = "not"
    else:
        return None
    phrases: list[list[int]] = []
    j = i + 1
    while True:
        while j < len(low) and low[j] in _DETERMINERS:
            j += 1
        phrase = []
        while j < len(low) and len(phrase) < 3 and low[j][:1].isalnum() and low[j] not in _BOUNDARY:
            phrase.append(j)
            j += 1
        while phrase and low[phrase[-1]] in _DETERMINERS:
            phrase.pop()
        if not phrase:
            break
        if any(low[k] in _SIGN_WORDS for k in phrase) or (j < len(low) and low[j] in _SIGN_WORDS) or \
                (cue == "no" and low[phrase[0]] in _SIGNS):
            return None  # "a no parking sign" names a sign
        if any(low[k] in _PERSON_CUES for k in phrase):
            return None
        phrases.append(phrase)
        if j + 1 < len(low) and low[j] in ("or", "nor") and low[j + 1] not in _DETERMINERS | _BOUNDARY:
            j += 1
            continue
        break
    if not phrases:
        return None
    return i, _skip_fillers(low, j), cue, phrases


def _skip_fillers(low: list[str], j: int) -> int:
    for filler in sorted(_FILLERS, key=len, reverse=True):
        if tuple(low[j:j + len(filler)]) == filler:
            return j + len(filler)
    return j
