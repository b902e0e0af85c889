"""Gold file: expression language, relevance from categories, validation errors."""

import json
from pathlib import Path

import pytest

from eval.gold import (
    GoldError,
    compute_relevance,
    judged_pool,
    load_gold,
    parse_expr,
    parse_gold,
)
from rag.config import shared_data_dir
from rag.errors import MmragError

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_data_dir() / "retrieval"

ROWS = [
    {"file": "images/a.jpg", "source": "coco2017", "categories_known": True, "categories": ["cat", "laptop"],
     "category_counts": {"cat": 1, "laptop": 1}},
    {"file": "images/b.jpg", "source": "coco2017", "categories_known": True, "categories": ["dog", "person"],
     "category_counts": {"dog": 1, "person": 7}},
    {"file": "images/c.jpg", "source": "coco2017", "categories_known": True, "categories": ["dog"],
     "category_counts": {"dog": 2}},
    {"file": "images/d.jpg", "source": "coco2017", "categories_known": False, "categories": []},
    {"file": "images/e.jpg", "source": "openimages_roboflow5", "categories_known": True, "categories": ["Person"]},
    {"file": "images/f.jpg", "source": "coco2017", "categories_known": True, "categories": ["teddy bear", "cat"]},
]
VOCAB = {"cat", "laptop", "dog", "person", "teddy bear", "bear"}


def test_judged_pool_is_coco_with_known_categories():
    assert [r["file"] for r in judged_pool(ROWS)] == ["images/a.jpg", "images/b.jpg", "images/c.jpg", "images/f.jpg"]


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("cat", ["images/a.jpg", "images/f.jpg"]),
        ("cat & laptop", ["images/a.jpg"]),
        ("dog & !person", ["images/c.jpg"]),
        ("laptop | dog", ["images/a.jpg", "images/b.jpg", "images/c.jpg"]),
        ("person>=6", ["images/b.jpg"]),
        ("person>=8", []),
        ("dog=2", ["images/c.jpg"]),
        ("(cat | dog) & !(laptop | person)", ["images/c.jpg", "images/f.jpg"]),
        ("bear", []),  # exact names: 'teddy bear' is not 'bear'
        ("teddy bear", ["images/f.jpg"]),
    ],
)
def test_compute_relevance(expr, expected):
    assert compute_relevance(expr, judged_pool(ROWS), VOCAB) == expected


@pytest.mark.parametrize("expr", ["", "cat &", "(cat", "cat dog )", "& cat", "cat >= x"])
def test_bad_expressions(expr):
    with pytest.raises(GoldError):
        parse_expr(expr)


def test_unknown_category_is_named():
    with pytest.raises(GoldError, match="unknown category 'kitten'"):
        parse_expr("cat & kitten", VOCAB)
    _, names = parse_expr("cat & teddy bear | dog>=2", VOCAB)
    assert names == {"cat", "teddy bear", "dog"}


def _doc(**query_overrides):
    q = {"id": "q1", "short": "cat", "descriptive": "a cat", "expr": "cat", "relevant": ["images/a.jpg"]}
    q.update(query_overrides)
    return {"judged": ["images/a.jpg", "images/b.jpg"], "queries": [q]}


def test_parse_valid_document():
    gold = parse_gold(_doc(tags=["object"]), catalog_files={"images/a.jpg", "images/b.jpg", "images/z.jpg"})
    assert len(gold.queries) == 1
    q = gold.queries[0]
    assert q.relevant == frozenset({"images/a.jpg"}) and q.tags == ("object",)
    assert q.text("short") == "cat" and q.text("descriptive") == "a cat"
    assert gold.judged == frozenset({"images/a.jpg", "images/b.jpg"})


def test_empty_relevance_is_rejected():
    with pytest.raises(GoldError, match="q1 has no relevant images"):
        parse_gold(_doc(relevant=[]))


def test_unknown_file_is_rejected():
    with pytest.raises(GoldError, match="q1 names unknown file 'images/typo.jpg'"):
        parse_gold(_doc(relevant=["images/a.jpg", "images/typo.jpg"]), catalog_files={"images/a.jpg", "images/b.jpg"})


def test_judged_file_outside_catalog_is_rejected():
    with pytest.raises(GoldError, match="judged file"):
        parse_gold(_doc(), catalog_files={"images/a.jpg"})


def test_relevant_outside_judged_pool_is_rejected():
    with pytest.raises(GoldError, match="not in the judged pool"):
        parse_gold(_doc(relevant=["images/a.jpg", "images/q.jpg"]))


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"queries": []}, "'judged'"),
        ({"judged": ["images/a.jpg"], "queries": []}, "no queries"),
        ([], "expected a JSON object"),
        ({"judged": ["images/a.jpg"], "queries": [{"id": "q9", "short": "x"}]}, "q9 lacks descriptive, expr, relevant"),
    ],
)
def test_structural_errors(doc, message):
    with pytest.raises(GoldError, match=message):
        parse_gold(doc)


def test_duplicate_ids_and_blank_texts():
    doc = _doc()
    doc["queries"].append(dict(doc["queries"][0]))
    with pytest.raises(GoldError, match="duplicate query id q1"):
        parse_gold(doc)
    with pytest.raises(GoldError, match="empty 'short'"):
        parse_gold(_doc(short="  "))
    with pytest.raises(GoldError, match="bad category expression"):
        parse_gold(_doc(expr="cat &"))


def test_load_gold_file_errors(tmp_path):
    with pytest.raises(GoldError, match="not found"):
        load_gold(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MmragError, match="not valid JSON"):
        load_gold(bad)
    good = tmp_path / "g.json"
    good.write_text(json.dumps(_doc()))
    assert load_gold(good).path == good


@pytest.mark.skipif(not (SHARED / "metadata.jsonl").is_file(), reason="sample catalog ../shared/data/retrieval not present")
def test_repo_gold_file_is_valid_and_up_to_date():
    """The committed gold file matches the catalog and its relevance equals what the builder computes."""
    import subprocess
    import sys

    from eval.gold import catalog_files_of

    gold = load_gold(ROOT / "gold_queries.json", catalog_files=catalog_files_of(SHARED))
    assert len(gold.queries) >= 40
    assert all(len(q.short) < len(q.descriptive) for q in gold.queries)
    tags = {t for q in gold.queries for t in q.tags}
    assert {"conjunction", "text-in-image", "hard"} <= tags
    done = subprocess.run([sys.executable, str(ROOT / "scripts/build_gold_queries.py"), "--check", "--catalog", str(SHARED)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
