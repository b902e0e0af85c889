"""The eval's query-understanding tables (negation, composite, multilingual) through `mmrag eval --query-tables only`
on the shipped example catalog, checked against the engine's own rankings; plus their pure helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import EXAMPLE_CATALOG
from eval.gold import compute_relevance, expr_categories, judged_pool, load_gold, parse_gold, read_metadata
from eval.query_tables import load_translations
from rag.errors import MmragError

QUERIES = [
    {"id": "kitchen-no-person", "short": "oven no people", "descriptive": "a kitchen with nobody in it",
     "expr": "oven & !person", "tags": ["negation"]},
    {"id": "sink-no-person", "short": "sink without people", "descriptive": "a sink with no one around",
     "expr": "sink & !person", "tags": ["negation"]},
    {"id": "table-minus-person", "short": "table no people", "descriptive": "a dining table and nobody at it",
     "composite": '"dining table" - "person"', "expr": "dining table & !person", "tags": ["composite"]},
    {"id": "elephant", "short": "elephant", "descriptive": "an elephant walking", "expr": "elephant", "tags": ["object"]},
]
TRANSLATIONS = {
    "kitchen-no-person": {"de": ["Ofen ohne Menschen", "eine Küche, in der niemand ist"]},
    "sink-no-person": {"de": ["Spüle ohne Menschen", "eine Spüle, niemand in der Nähe"]},
    "table-minus-person": {"de": ["Tisch ohne Menschen", "ein Esstisch, an dem niemand sitzt"]},
    "elephant": {"de": ["Elefant", "ein Elefant, der geht"]},
}


def _gold(tmp_path: Path) -> Path:
    pool = judged_pool(read_metadata(EXAMPLE_CATALOG / "metadata.jsonl"))
    queries = [{**q, "relevant": compute_relevance(q["expr"], pool)} for q in QUERIES]
    path = tmp_path / "gold.json"
    path.write_text(json.dumps({"judged": sorted(r["file"] for r in pool), "queries": queries}))
    return path


def _translations(tmp_path: Path) -> Path:
    path = tmp_path / "ml.json"
    path.write_text(json.dumps({"languages": {"de": "German"}, "queries": [
        {"id": qid, **{lang: {"short": s, "descriptive": d} for lang, (s, d) in langs.items()}}
        for qid, langs in TRANSLATIONS.items()]}, ensure_ascii=False))
    return path


def test_expr_categories_and_translation_checks(tmp_path) -> None:
    assert expr_categories("dog & !person") == (["dog"], ["person"])
    assert expr_categories("(oven | sink) & !(person | cat)") == (["oven", "sink"], ["person", "cat"])
    gold = load_gold(_gold(tmp_path))
    translations = load_translations(_translations(tmp_path), gold)
    assert translations.texts[("elephant", "de", "descriptive")] == "ein Elefant, der geht"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"languages": {"de": "German"}, "queries": [{"id": "elephant", "de": {"short": "x"}}]}))
    with pytest.raises(MmragError, match="elephant lacks its German descriptive form"):
        load_translations(bad, gold)
    with pytest.raises(MmragError, match="cannot read"):
        load_translations(tmp_path / "missing.json", gold)


@pytest.mark.slow
def test_query_tables_only_run_matches_the_engine(tmp_path) -> None:
    from eval.cli import main
    from eval.metrics import condense, query_metrics
    from rag.config import Settings
    from rag.search import SearchEngine

    gold_path, out = _gold(tmp_path), tmp_path / "out"
    argv = ["--catalog", str(EXAMPLE_CATALOG), "--gold", str(gold_path), "--out", str(out), "--query-tables", "only",
            "--multilingual", str(_translations(tmp_path)), "--text-models", "all-MiniLM-L6-v2", "--clip-models",
            "none", "--caption-sources", "catalog", "--no-progress", "--threads", "0"]
    assert main(argv) == 0
    assert not (out / "report.md").exists()  # only the query tables are written
    doc = json.loads((out / "query_tables.json").read_text())
    qt = doc["query_tables"]
    neg, comp, ml = qt["negation"], qt["composite"], qt["multilingual"]
    assert neg["queries"] == ["kitchen-no-person", "sink-no-person"] and len(neg["rows"]) == 3 * 3 * 2
    assert comp["queries"] == ["table-minus-person"] and len(comp["rows"]) == 3 * 5
    assert {(r["language"], r["mode"]) for r in ml["rows"]} == {(lang, mode) for lang in ("en", "de")
                                                                for mode in ("caption", "hybrid", "bm25")}
    report = (out / "query_tables.md").read_text()
    for title in ("### Negation queries", "### Composite queries", "### Multilingual queries"):
        assert title in report

    gold = load_gold(gold_path)
    by_id = {q.id: q for q in gold.queries}
    categories = {r["file"]: set(r["categories"]) for r in read_metadata(EXAMPLE_CATALOG / "metadata.jsonl")}
    settings = Settings(data_dir=out / "_work" / doc["meta"]["base_index"], clip_model=None)
    with SearchEngine.open(settings) as engine:
        for variant, literal in (("with handling", False), ("without handling (literal)", True)):
            row = next(r for r in neg["rows"] if (r["mode"], r["variant"], r["form"]) == ("hybrid", variant, "descriptive"))
            for pq in row["per_query"]:
                q = by_id[pq["id"]]
                response = engine.search(q.descriptive, mode="hybrid", k=50, literal=literal)
                ranked = condense(["images/" + Path(r.path).name for r in response.results], gold.judged)
                assert pq["metrics"] == pytest.approx(query_metrics(ranked, q.relevant), abs=1e-4)  # JSON rounds to 4 places
                share = sum(1 for f in ranked[:5] if "person" in categories[f]) / len(ranked[:5])
                assert pq["negated@5"] == pytest.approx(share, abs=1e-4)
                assert pq["negations"] == ([] if literal else ["people"])
        row = next(r for r in comp["rows"] if (r["mode"], r["variant"]) == ("bm25", "composite syntax"))
        assert row["per_query"][0]["parts"] == [["dining table", 1.0], ["person", -1.0]]
