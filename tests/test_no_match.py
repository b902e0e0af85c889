"""'No good match': the absent-query check, the threshold fit, and the verdict through the engine, JSON and CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import REPO
from eval.absent import AbsentQuery, load_absent, term_hits
from eval.match_calibration import Point, fit, query_evidence, score, split_ids
from rag.config import DEFAULT_MATCH_THRESHOLDS, Settings
from rag.errors import MmragError
from rag.bm25 import tokenize
from rag.match import ChannelThreshold, MatchJudge, bm25_evidence, evidence

KANGAROO = "a kangaroo hopping through the outback"


# ---------------------------------------------------------------- absent queries


def test_absent_queries_name_nothing_the_sample_catalog_holds(full_retrieval_rows) -> None:
    queries = load_absent()
    assert len(queries) >= 15 and len({q.id for q in queries}) == len(queries)
    hits = term_hits(queries, full_retrieval_rows)
    assert {qid: found[:2] for qid, found in hits.items() if found} == {}
    # the same search does find a thing the catalog holds, in a caption, a COCO category or an Open Images label
    planted = [AbsentQuery("giraffe", "giraffe", "giraffe", ("giraffe",)), AbsentQuery("oi", "x", "x", ("Boat",))]
    found = term_hits(planted, full_retrieval_rows)
    assert found["giraffe"] and found["oi"]


def test_check_script_exit_codes(full_retrieval_data, tmp_path: Path) -> None:
    script = REPO / "scripts" / "check_absent_queries.py"
    ok = subprocess.run([sys.executable, str(script), "--catalog", str(full_retrieval_data)], capture_output=True, text=True)
    assert ok.returncode == 0 and "24/24 absent queries hold no term" in ok.stdout
    bad = tmp_path / "absent.json"
    bad.write_text(json.dumps({"queries": [{"id": "zebra", "short": "zebra", "descriptive": "zebras", "terms": ["zebra"]}]}))
    failed = subprocess.run([sys.executable, str(script), "--catalog", str(full_retrieval_data), "--absent", str(bad)],
                            capture_output=True, text=True)
    assert failed.returncode == 1 and "zebra: term 'zebra' occurs in images/" in failed.stdout


# ---------------------------------------------------------------- fit and scoring (pure)


def _points(present: list[dict], absent: list[dict]) -> list[Point]:
    return ([Point(f"p{i}", "short", "", True, e) for i, e in enumerate(present)]
            + [Point(f"a{i}", "short", "", False, e) for i, e in enumerate(absent)])


def test_fit_puts_the_threshold_between_the_classes_and_lets_channels_rescue() -> None:
    present = [{"caption": 0.6, "bm25": 0.9}, {"caption": 0.55, "bm25": None}, {"caption": 0.30, "bm25": 0.8}]
    absent = [{"caption": 0.35, "bm25": None}, {"caption": 0.40, "bm25": 0.2}, {"caption": 0.25, "bm25": 0.3}]
    thresholds = fit(_points(present, absent), ["caption", "bm25"])
    # caption alone cannot separate (0.30 present < 0.40 absent); bm25 rescues the 0.30 one
    assert thresholds["caption"].none_below == pytest.approx((0.40 + 0.55) / 2)
    assert 0.3 < thresholds["bm25"].none_below <= 0.8
    result = score(_points(present, absent), thresholds)
    assert (result["absent"]["none"], result["present"]["none"]) == (3, 0)
    # good_above: no absent query of the fit was above it
    assert thresholds["bm25"].good_above >= 0.3 and thresholds["caption"].good_above >= thresholds["caption"].none_below


def test_fit_prefers_missing_an_absent_query_to_hiding_a_present_one() -> None:
    # one absent query scores above one present query: with cost 2 the fit lets the absent one through
    present = [{"caption": 0.50}, {"caption": 0.70}, {"caption": 0.80}]
    absent = [{"caption": 0.20}, {"caption": 0.55}, {"caption": 0.30}]
    thresholds = fit(_points(present, absent), ["caption"])
    assert thresholds["caption"].none_below < 0.50
    result = score(_points(present, absent), thresholds)
    assert result["present"]["none"] == 0 and result["absent"]["none"] == 2 and result["absent"]["good"] == 0


def test_split_is_seeded_halves() -> None:
    ids = [f"q{i}" for i in range(11)]
    fit_ids, held = split_ids(ids, 11)
    assert split_ids(list(reversed(ids)), 11) == (fit_ids, held)  # order of the input does not matter
    assert len(fit_ids) == 6 and not set(fit_ids) & set(held) and set(fit_ids) | set(held) == set(ids)
    assert split_ids(ids, 12) != (fit_ids, held)


def test_bm25_evidence_is_score_over_terms_times_max_idf() -> None:
    n = 567
    idf_max = math.log(1 + (n - 0.5) / 1.5)
    assert bm25_evidence(12.0, "Dogs on the beach!", n) == pytest.approx(12.0 / (2 * idf_max))  # 'on', 'the' are stop words
    assert bm25_evidence(12.0, "the of", n) is None and bm25_evidence(None, "dog", n) is None
    assert evidence("caption", 0.42) == 0.42


def test_shipped_thresholds_cover_the_default_text_model() -> None:
    judge = MatchJudge.load(DEFAULT_MATCH_THRESHOLDS, text_model="all-MiniLM-L6-v2", clip_model=None)
    assert set(judge.thresholds) == {"caption", "bm25"} and set(judge.alone) == {"caption", "bm25"}
    assert judge.for_voters(["caption", "bm25", "ocr"]) == judge.thresholds  # ocr is not calibrated: it does not vote
    assert judge.for_voters(["caption"]) == {"caption": judge.alone["caption"]}
    unknown = MatchJudge.load(DEFAULT_MATCH_THRESHOLDS, text_model="some-other-model", clip_model="random-clip")
    assert unknown.for_voters(["caption", "bm25", "clip"]) == {}


def test_bad_or_missing_thresholds_file(tmp_path: Path) -> None:
    with pytest.raises(MmragError, match="match thresholds file not found"):
        MatchJudge.load(tmp_path / "nope.json", text_model="m", clip_model=None, required=True)
    assert MatchJudge.load(tmp_path / "nope.json", text_model="m", clip_model=None).channels == []
    bad = tmp_path / "bad.json"
    bad.write_text('{"text_models": {"m": {"channels": {"caption": {"none_below": "x"}}}}}')
    with pytest.raises(MmragError, match="bad match thresholds file") as info:
        MatchJudge.load(bad, text_model="m", clip_model=None)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- through the engine, the JSON and the CLI


def _own_caption(rows: list[dict]) -> str:
    return next(r["captions"][0] for r in rows if r.get("captions"))


def _engine(settings: Settings, text_model):
    from rag.search import SearchEngine

    return SearchEngine.open(settings, text_embedder=text_model)


def test_engine_verdicts_follow_each_channels_own_score(caption_sample24, text_model, tmp_path: Path) -> None:
    settings, rows = caption_sample24
    path = tmp_path / "thresholds.json"
    joint = {"caption": {"none_below": 0.45, "good_above": 0.6}, "bm25": {"none_below": 0.3, "good_above": 0.5}}
    path.write_text(json.dumps({"text_models": {"all-MiniLM-L6-v2": {"channels": joint, "alone": {
        "caption": {"none_below": 0.2, "good_above": 0.9}}}}}))
    with _engine(replace(settings, match_thresholds=path), text_model) as engine:
        n = engine.count()
        own_caption = _own_caption(rows)
        for query in (own_caption, "dog", KANGAROO):
            response = engine.search(query, k=8)
            for r in response.results:
                levels = [ChannelThreshold(**joint["caption"]).level(r.scores["caption"]),
                          ChannelThreshold(**joint["bm25"]).level(bm25_evidence(r.scores["bm25"], query, n))]
                assert r.match == max(levels, key=["none", "weak", "good"].index)
            assert response.match == max((r.match for r in response.results), key=["none", "weak", "good"].index)
            data = response.to_dict()
            assert data["match"] == response.match and [x["match"] for x in data["results"]] == [r.match for r in response.results]
            assert set(data["match_evidence"]) == {"caption", "bm25"}
        # a catalog caption, word for word, is a good match; the rank-1 result is that photo
        assert engine.search(own_caption, k=3).match == "good"
        # one channel alone: its own ("alone") thresholds
        alone = engine.search("dog", mode="caption", k=5)
        assert all(r.match == ChannelThreshold(0.2, 0.9).level(r.scores["caption"]) for r in alone.results)
        assert engine.search("dog", mode="bm25", k=5).match is None  # bm25 has no alone thresholds in this file


def test_calibration_measures_evidence_as_the_engine_judges_it(caption_sample24, text_model) -> None:
    """Fit and use must see the same numbers: for a negated query the BM25 evidence is normalised by the words the
    BM25 channel searched ("dog"), not by the raw query ("a dog without a frisbee": 3 terms)."""
    settings, _ = caption_sample24
    with _engine(settings, text_model) as engine:
        n = engine.count()
        for query in ("a dog with no people around", "2:dog + couch - person", "dog"):
            response = engine.search(query, k=10)
            assert response.match_evidence and query_evidence(response, ["caption", "bm25"], n) == response.match_evidence
        negated = engine.search("a dog without a frisbee", k=10)  # no frisbee in these 24 photos' captions
        assert tokenize(negated.bm25_query) == ["dog"]
        raw = max(bm25_evidence(r.scores["bm25"], "a dog without a frisbee", n) or 0 for r in negated.results)
        assert query_evidence(negated, ["bm25"], n)["bm25"] > raw > 0


def test_absent_query_is_no_good_match_with_shipped_thresholds(caption_sample24, text_model) -> None:
    settings, rows = caption_sample24
    assert not any(term_hits([q for q in load_absent() if q.id == "kangaroo"], rows).values())
    with _engine(settings, text_model) as engine:
        response = engine.search(KANGAROO, k=5)
        assert response.match == "none" and response.results and all(r.match == "none" for r in response.results)
        assert engine.search(_own_caption(rows), k=5).match == "good"
        native = engine.search(KANGAROO, k=5, fusion="native")  # Milvus fuses: no channel scores, no verdict
        assert native.match is None and native.to_dict()["match"] is None


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmrag.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_cli_prints_the_no_match_line_and_json(caption_sample24) -> None:
    settings, rows = caption_sample24
    run = _cli("search", KANGAROO, "--data-dir", str(settings.data_dir), "-k", "3")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[1] == f"no good match for '{KANGAROO}': the nearest results are shown below"
    assert lines[2].startswith("  1. ") and "(none)" in lines[2]
    data = json.loads(_cli("search", KANGAROO, "--data-dir", str(settings.data_dir), "-k", "3", "--json").stdout)
    assert data["match"] == "none" and {r["match"] for r in data["results"]} == {"none"}
    good = _cli("search", _own_caption(rows), "--data-dir", str(settings.data_dir), "-k", "3")
    assert "no good match" not in good.stdout and "(good)" in good.stdout
    missing = _cli("search", "dog", "--data-dir", str(settings.data_dir), env={"MMRAG_MATCH_THRESHOLDS": "/nonexistent.json"})
    assert missing.returncode == 2 and missing.stderr.startswith("mmrag: error: match thresholds file not found")
