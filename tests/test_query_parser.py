"""rag.query_parser: the composite query syntax, automatic negation, chips, and the lexical helpers BM25 uses."""

from __future__ import annotations

import pytest

from rag.channels import QueryPart
from rag.errors import MmragError
from rag.query_parser import (
    PERSON_WORDS,
    detect_negations,
    format_part,
    format_query,
    matched_terms,
    negative_term_groups,
    parse_chip,
    parse_query,
)
from rag.milvus_filters import exclusion_filter


def _parts(text: str, **kw) -> list[tuple[str | None, float]]:
    return [(p.text or p.image, p.weight) for p in parse_query(text, **kw).parts]


# ---------------------------------------------------------------- composite syntax


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("2:dog + beach - people", [("dog", 2.0), ("beach", 1.0), ("people", -1.0)]),
        ('"kitchen" - "person"', [("kitchen", 1.0), ("person", -1.0)]),
        ('"kitchen"-"person"', [("kitchen", 1.0), ("person", -1.0)]),  # quotes delimit the operator too
        ('0.5:"red car" + 1.5:"blue car"', [("red car", 0.5), ("blue car", 1.5)]),
        ("a dog - 2:people", [("a dog", 1.0), ("people", -2.0)]),
        ("- people + dog", [("people", -1.0), ("dog", 1.0)]),  # a leading operator signs the first term
        ("+ dog", [("dog", 1.0)]),
        ("ref.jpg + snow", [("ref.jpg", 1.0), ("snow", 1.0)]),
        ("dog  +   beach", [("dog", 1.0), ("beach", 1.0)]),
        ("“dog” − “cat”", [("dog", 1.0), ("cat", -1.0)]),  # typographic quotes and minus sign
    ],
)
def test_composite_syntax(query: str, expected: list[tuple[str, float]]) -> None:
    parsed = parse_query(query)
    assert [(p.text or p.image, p.weight) for p in parsed.parts] == expected
    assert parsed.composite


def test_image_terms_become_image_parts() -> None:
    parts = parse_query("./photos/ref.JPG - 0.5:snow").parts
    assert parts[0] == QueryPart(image="./photos/ref.JPG", weight=1.0)
    assert parts[1] == QueryPart(text="snow", weight=-0.5)
    assert parse_query('"my photo.jpg"').parts[0].text == "my photo.jpg"  # a spaced quoted name stays text


@pytest.mark.parametrize(
    "query",
    ["a T-shirt on a hanger", "3-4 people at a table", "C++ book", "10:30 train", "dog -people", "a 5\" screen",
     "a 1:1 scale model", "well-known landmark", "salt+pepper", "a sign that says \"STOP\""],
)
def test_plain_text_is_not_mangled(query: str) -> None:
    parsed = parse_query(query)
    assert len(parsed.parts) == 1 and parsed.parts[0].weight == 1.0 and not parsed.composite
    assert parsed.parts[0].text == " ".join(query.replace('"STOP"', "STOP").split())


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("dog +", "dangling '+'"),
        ("dog -", "dangling '-'"),
        ("dog + + beach", "two operators in a row"),
        ("dog + - beach", "two operators in a row"),
        ("0:dog", "bad weight '0'"),
        ("dog + 0.0:beach", "bad weight '0.0'"),
        ("dog + 101:beach", "bad weight '101'"),
        ("2:", "empty term"),
        ('dog + ""', "empty term"),
        ("- people", "only negative terms"),
        ('"dog + beach', "unclosed quote"),  # with operators a stray quote is an error, not text
        ("   ", "empty query"),
    ],
)
def test_parse_errors_are_one_clear_line(query: str, fragment: str) -> None:
    with pytest.raises(MmragError) as info:
        parse_query(query)
    message = str(info.value)
    assert fragment in message and "\n" not in message


# ---------------------------------------------------------------- automatic negation


@pytest.mark.parametrize(
    ("query", "positive", "negatives", "cues"),
    [
        ("a dog with no people around", "a dog", ["people"], ["no"]),
        ("a kitchen without any people in it", "a kitchen", ["people"], ["without"]),
        ("a room with no one in it", "a room", ["people"], ["no one"]),
        ("a beach with nobody in sight", "a beach", ["people"], ["nobody"]),
        ("a street with no cars or people", "a street", ["cars", "people"], ["no", "no"]),
        ("a cat but not a dog", "a cat", ["dog"], ["not"]),
        ("a dog that is not black", "a dog", ["black"], ["not"]),
        ("a bus with no cars around it", "a bus", ["cars"], ["no"]),
        ("a kitchen, no people, bright light", "a kitchen, bright light", ["people"], ["no"]),
        ("Elephants Without People", "Elephants", ["People"], ["without"]),
        ("a man not wearing a hat", "a man", ["wearing a hat"], ["not"]),
        ("nobody on the beach", "on the beach", ["people"], ["nobody"]),
    ],
)
def test_negation_in_plain_queries(query: str, positive: str, negatives: list[str], cues: list[str]) -> None:
    parsed = parse_query(query)
    assert [(p.text, p.weight) for p in parsed.parts] == [(positive, 1.0)] + [(n, -1.0) for n in negatives]
    assert [n.text for n in parsed.negations] == negatives and [n.cue for n in parsed.negations] == cues
    assert not parsed.composite


@pytest.mark.parametrize(
    "query",
    ["not only cats but also dogs", "No. 5 bus", "a no parking sign", "no smoking", "a no left turn sign",
     "Noah and the ark", "a dog that no longer runs", "no people", "nobody", "without a doubt the best beach",
     "a nobody's dog", "cannot see", "whether or not it rains", "a knot in a rope", "piano keys", "no, the dog",
     "a 'no dogs allowed' sign", "a notebook", "a dog not on a leash", "not too big a dog", "a dog or not"],
)
def test_negation_is_conservative(query: str) -> None:
    parsed = parse_query(query)
    assert not parsed.negations and [p.text for p in parsed.parts] == [query]


def test_negation_off_and_in_quotes_and_weights() -> None:
    assert _parts("a dog with no people", negation=False) == [("a dog with no people", 1.0)]
    assert _parts('"a dog with no people"') == [("a dog with no people", 1.0)]
    # a weighted term lends its weight to the negation it holds
    assert _parts("2:a dog with no people + beach") == [("a dog", 2.0), ("people", -2.0), ("beach", 1.0)]
    positive, found = detect_negations("plain text")
    assert positive == "plain text" and found == []


# ---------------------------------------------------------------- chips and formatting


def test_chips_parse_and_format_round_trip() -> None:
    assert parse_chip("beach") == QueryPart(text="beach")
    assert parse_chip("- people") == QueryPart(text="people", weight=-1.0)
    assert parse_chip("-2:people") == QueryPart(text="people", weight=-2.0)
    assert parse_chip('+ 0.5:"red car"') == QueryPart(text="red car", weight=0.5)
    with pytest.raises(MmragError, match="one term per part"):
        parse_chip("dog + beach")
    with pytest.raises(MmragError, match="empty"):
        parse_chip(" - ")
    parts = [QueryPart(text="dog", weight=2.0), QueryPart(text="T-shirt"), QueryPart(image="/x/ref.jpg"),
             QueryPart(text="people", weight=-1.0)]
    assert [format_part(p) for p in parts] == ["+ 2:dog", '+ "T-shirt"', "+ /x/ref.jpg", "- people"]
    assert format_query(parts) == '2:dog + "T-shirt" + /x/ref.jpg - people'
    assert list(parse_query(format_query(parts), negation=False).parts) == parts
    assert [parse_chip(format_part(p)) for p in parts] == parts


# ---------------------------------------------------------------- lexical helpers


def test_negative_groups_and_matched_terms() -> None:
    parts = parse_query("a dog on the grass with no people - red balls").parts
    groups = negative_term_groups(parts)
    assert groups[0] == [PERSON_WORDS] and groups[1] == [frozenset({"red"}), frozenset({"ball"})]
    assert {"man", "women", "person", "child"} <= PERSON_WORDS
    caption = "Two dogs play on the grass. A dog runs."
    assert matched_terms(parts, caption) == ["dog", "grass"]  # stems; stop words and negative parts never count
    assert matched_terms(parts, "") == []


def test_exclusion_filter_matches_whole_tokens_only() -> None:
    expr = exclusion_filter("bm25_text", [[frozenset({"dog"})], [frozenset({"red"}), frozenset({"ball"})]]).expr
    assert expr.startswith("not (") and 'bm25_text like "% dog %"' in expr and 'bm25_text == "dog"' in expr
    assert 'like "% red %")) and ((' in expr  # both tokens of a phrase must be held (behaviour: test_composite_queries)


def test_client_side_bm25_excludes_the_same_documents() -> None:
    """Servers without the BM25 function (Milvus 2.3/2.4) score BM25 in-process: the exclusion happens there."""
    from rag.bm25 import BM25Index

    index = BM25Index(["a", "b", "c", "d"], ["a dog on the grass", "a man and his dog", "two women walking dogs",
                                              "a red ball and a dog"])
    groups = negative_term_groups(parse_query("dog - people - red ball").parts)
    assert {d for d, _ in index.top("dog", 10)} == set("abcd")
    assert [d for d, _ in index.top("dog", 10, exclude_groups=groups)] == ["a"]
    only_red = negative_term_groups(parse_query("dog - red").parts)
    assert {d for d, _ in index.top("dog", 10, exclude_groups=only_red)} == {"a", "b", "c"}
