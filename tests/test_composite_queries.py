"""Composite queries, negation and explanations on the shipped example catalog (40 real photos, caption side):
through the engine API, the store's hybrid_search, and `python -m mmrag.cli search` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLE_CATALOG
from rag.bm25 import tokenize
from rag.channels import QueryPart
from rag.config import Settings
from rag.errors import MmragError
from rag.query_parser import PERSON_WORDS, negative_term_groups, parse_query
from rag.search import SearchEngine
from conftest import run_mmrag as mmrag

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(example_index) -> Path:
    return example_index


@pytest.fixture()
def engine(data_dir, text_model):
    with SearchEngine.open(Settings(data_dir=data_dir, clip_model=None), text_embedder=text_model) as opened:
        yield opened


def _names_people(caption: str) -> bool:
    return bool(PERSON_WORDS & set(tokenize(caption)))


def test_negation_drops_bm25_documents_that_name_the_excluded_thing(engine) -> None:
    plain = engine.search("a street", mode="bm25", k=40)
    assert any(_names_people(r.caption) for r in plain.results)  # the catalog has street scenes with people
    negated = engine.search("a street with no people", mode="bm25", k=40)
    assert [r.id for r in negated.results] == [r.id for r in plain.results if not _names_people(r.caption)]
    assert [p.text for p in negated.parts] == ["a street", "people"] and negated.parts[1].negative
    assert [(n.cue, n.text) for n in negated.negations] == [("no", "people")]
    # literal: the words go to BM25 as written, and "people" now pulls people in
    literal = engine.search("a street with no people", mode="bm25", k=40, literal=True)
    assert [p.text for p in literal.parts] == ["a street with no people"] and not literal.negations
    assert any(_names_people(r.caption) for r in literal.results[:5])


def test_hybrid_negation_keeps_bm25_votes_off_excluded_documents(engine) -> None:
    for fusion in ("client", "native"):
        response = engine.search("a kitchen with nobody in it", k=10, fusion=fusion)
        assert response.results and [n.cue for n in response.negations] == ["nobody"]
        if fusion == "client":  # client fusion reports each channel's ranks: BM25 never ranked a caption naming people
            assert all(r.ranks["bm25"] is None for r in response.results if _names_people(r.caption))
    # native fusion: the BM25 request of Milvus' hybrid_search carries the exclusion itself
    store = engine.store
    bm25 = store.channel("bm25")
    excluded = negative_term_groups(parse_query("a street - people").parts)
    hits = store.hybrid_search([(bm25, "street")], 40, 40, 60, exclude=excluded)
    plain = store.hybrid_search([(bm25, "street")], 40, 40, 60)
    captions = {doc_id: row["caption"] for doc_id, row in store.fetch([h for h, _ in plain]).items()}
    assert [h for h, _ in hits] == [h for h, _ in plain if not _names_people(captions[h])]


def test_composite_vector_is_the_normalised_weighted_sum(engine, text_model) -> None:
    composite = engine.search("2:dog + grass - people", mode="caption", k=8)
    by_parts = engine.search(None, mode="caption", k=8, parts=[QueryPart("dog", weight=2), QueryPart("grass"),
                                                                QueryPart("people", weight=-1)])
    assert [(r.id, r.score) for r in composite.results] == [(r.id, r.score) for r in by_parts.results]
    assert composite.to_dict()["parts"] == [{"text": "dog", "image": None, "weight": 2.0},
                                            {"text": "grass", "image": None, "weight": 1.0},
                                            {"text": "people", "image": None, "weight": -1.0}]
    unit = lambda v: np.asarray(v) / np.linalg.norm(v)  # noqa: E731
    q = 2 * unit(text_model.get_query_embedding("dog")) + unit(text_model.get_query_embedding("grass")) \
        - unit(text_model.get_query_embedding("people"))
    q = q / np.linalg.norm(q)
    stored = engine.store.vectors("caption", [r.id for r in composite.results])
    for r in composite.results:
        assert r.scores["caption"] == pytest.approx(float(q @ unit(stored[r.id])), abs=1e-4)
    assert [r.id for r in engine.search("dog", mode="caption", k=8).results] != [r.id for r in composite.results]


def test_matched_terms_explain_each_result(engine) -> None:
    response = engine.search("a giraffe eating leaves from a tall tree", k=10)
    query_tokens = tokenize("a giraffe eating leaves from a tall tree")
    for r in response.results:
        assert r.matched_terms == [t for t in dict.fromkeys(query_tokens) if t in set(tokenize(r.caption))]
    assert any(r.matched_terms for r in response.results)
    assert all(r.ranks["bm25"] is None for r in response.results if not r.matched_terms)  # BM25 needs a shared term
    data = response.to_dict()
    assert set(data) == {"query", "mode", "results", "timings_ms", "fusion", "parts", "negations", "match", "match_evidence"}
    assert set(data["results"][0]) == {"id", "path", "score", "rank", "ranks", "caption", "scores", "matched_terms", "match"}


def test_image_terms_and_errors(engine) -> None:
    image = EXAMPLE_CATALOG / "images" / "coco_000000119828.jpg"
    response = engine.search(f"{image} - snow", mode="caption", k=5)
    assert response.parts[0].image == str(image) and response.parts[0].image_caption  # described by its caption
    assert all(Path(r.path).name != image.name for r in response.results)  # its own hit is dropped
    with pytest.raises(MmragError, match="query image not found"):
        engine.search("nowhere/missing.jpg + snow", mode="caption")
    with pytest.raises(MmragError, match="dangling"):
        engine.search("dog -", mode="caption")
    with pytest.raises(MmragError, match="only negative"):
        engine.search(None, parts=[QueryPart("people", weight=-1)])


def test_cli_composite_flags_and_json(data_dir) -> None:
    out = mmrag("search", "dog", "--plus", "2:grass", "--minus", "people", "--mode", "bm25", "-k", "20", "--json",
                "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["parts"] == [{"text": "dog", "image": None, "weight": 1.0}, {"text": "grass", "image": None, "weight": 2.0},
                             {"text": "people", "image": None, "weight": -1.0}]
    assert data["results"] and not any(_names_people(r["caption"]) for r in data["results"])
    assert all(set(r["matched_terms"]) <= {"dog", "grass"} and r["matched_terms"] for r in data["results"])

    out = mmrag("search", "a street with no people", "--json", "--data-dir", str(data_dir))
    assert json.loads(out.stdout)["negations"] == [{"cue": "no", "text": "people"}]
    out = mmrag("search", "a street with no people", "--literal", "--json", "--data-dir", str(data_dir))
    literal = json.loads(out.stdout)
    assert literal["negations"] == [] and [p["text"] for p in literal["parts"]] == ["a street with no people"]

    out = mmrag("search", '"kitchen" - "person"', "-k", "3", "--data-dir", str(data_dir))
    assert out.returncode == 0 and "parts: + kitchen  - person" in out.stdout and "matched: kitchen" in out.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["dog +"], "dangling '+'"), (["0:dog"], "bad weight"), (["dog", "--plus=- people"], "--plus takes a positive"),
     (["dog + + cat"], "two operators in a row")],
)
def test_cli_parse_errors_are_one_line(data_dir, args: list[str], fragment: str) -> None:
    out = mmrag("search", *args, "--data-dir", str(data_dir))
    assert out.returncode == 2 and fragment in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stdout == ""


def test_negation_on_milvus_23_scores_bm25_in_process() -> None:
    """Milvus 2.3 has no BM25 function and only prefix LIKE: the exclusion happens in the client-side BM25."""
    import importlib.util
    import sys

    from conftest import REPO
    from rag.dev.milvus_standalone import netns_available, run_in_netns

    if importlib.util.find_spec("milvus") is None:
        pytest.skip("the `milvus` package (Milvus 2.3.5 standalone) is not installed")
    ok, reason = netns_available()
    if not ok:
        pytest.skip(f"cannot make a private network namespace for the Milvus server: {reason}")
    proc = run_in_netns([sys.executable, str(Path(__file__).with_name("milvus23_negation_scenario.py"))],
                        timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "2.3" in seen["server"]
    assert any(_names_people(caption) for _, caption in seen["plain"])
    assert [i for i, _ in seen["negated"]] == [i for i, caption in seen["plain"] if not _names_people(caption)]
