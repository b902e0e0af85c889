"""Retrieval eval: reranker, runner and report on a synthetic engine, and an end-to-end slice on the real stack."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from eval.gold import compute_relevance, expr_categories, judged_pool, load_gold, parse_gold
from eval.retrieval_eval import (
    NO_CLIP,
    Catalog,
    EvalOptions,
    IndexSpec,
    RunConfig,
    analyse_sweep,
    folds,
    measure_latency,
    run_config,
    run_experiments,
    sweep_grid,
)
from eval.retrieval_report import classify_miss, classify_wrong, mentions, write_report
from rag.config import Settings, shared_data_dir
from rag.errors import MmragError
from rag.rerank import Reranker, parse_yes_no

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_data_dir() / "retrieval"


# ---------------------------------------------------------------- a synthetic catalog and engine


@dataclass
class Result:
    id: str
    path: str
    score: float
    rank: int
    ranks: dict
    caption: str
    metadata: dict = field(default_factory=dict)


@dataclass
class Response:
    query: str
    mode: str
    results: list
    timings_ms: dict = field(default_factory=dict)


@dataclass
class Record:
    id: str
    path: str
    caption: str


ROWS = [  # file stem, captions, categories
    ("cat1", ["a cat on a sofa"], ["cat", "couch"]),
    ("cat2", ["a kitten sleeping"], ["cat"]),
    ("cat3", [], ["cat"]),  # no caption: invisible to text retrieval
    ("dog1", ["a dog in the park"], ["dog"]),
    ("dog2", ["a dog and a cat playing"], ["dog", "cat"]),
    ("teddy", ["a teddy bear on a bed"], ["teddy bear", "bed"]),
    ("bear1", ["a brown bear in a river"], ["bear"]),
    ("laptop", ["a laptop on a desk"], ["laptop"]),
    ("unj", ["a cat sitting on a laptop"], None),  # unjudged
]


def make_catalog(root: Path) -> Catalog:
    (root / "images").mkdir(parents=True)
    lines = []
    for i, (stem, caps, cats) in enumerate(ROWS):
        Image.new("RGB", (32, 24), (20 * i, 100, 200 - 20 * i)).save(root / "images" / f"{stem}.jpg")
        lines.append(json.dumps({"file": f"images/{stem}.jpg", "source": "coco2017", "captions": caps,
                                 "categories": cats or [], "categories_known": cats is not None}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return Catalog.load(root)


class FakeEngine:
    """Word-overlap 'retrievers' over the captions: caption counts substring hits, bm25 whole words."""

    def __init__(self, catalog: Catalog, clip=None):
        self.records = {}
        for r in catalog.rows:
            text = " ".join(r["captions"]) or Path(r["file"]).stem
            self.records[r["file"]] = Record(r["file"], str(catalog.root / r["file"]), text)
        self.clip = clip
        self.available_modes = ["caption", "bm25", "hybrid"] + (["clip"] if clip else [])
        self.calls = []
        self.closed = False

    def _rank(self, text, mode):
        words = text.lower().split()
        scored = []
        for rid, rec in self.records.items():
            cap = rec.caption.lower()
            s = sum(w in cap for w in words) if mode == "caption" else sum(w in cap.split() for w in words)
            if s > 0:
                scored.append((-s, rid))
        return [rid for _, rid in sorted(scored)]

    def count(self):
        return len(self.records)

    @property
    def store(self):
        rows = [{"id": r.id, "path": r.path, "caption_sources": ["metadata"]} for r in self.records.values()]
        return SimpleNamespace(sample=lambda limit: rows[:limit])

    def search(self, text, *, mode="hybrid", k=10, weights=None):
        self.calls.append((text, mode, k, weights))
        if mode == "hybrid":
            w = {"caption": 1.0, "bm25": 1.0, **(weights or {})}
            fused = {}
            per = {m: self._rank(text, m) for m in ("caption", "bm25") if w[m] > 0}
            for m, ids in per.items():
                for r, rid in enumerate(ids, 1):
                    fused[rid] = fused.get(rid, 0) + w[m] / (60 + r)
            order = sorted(fused, key=lambda rid: (-fused[rid], rid))
            ranks = {m: {rid: r for r, rid in enumerate(ids, 1)} for m, ids in per.items()}
        else:
            order = self._rank(text, mode)
            ranks = {mode: {rid: r for r, rid in enumerate(order, 1)}}
        results = [Result(rid, self.records[rid].path, 1.0 / i, i, {m: ranks.get(m, {}).get(rid) for m in ("clip", "caption", "bm25")},
                          self.records[rid].caption) for i, rid in enumerate(order[:k], 1)]
        return Response(text, mode, results)

    def close(self):
        self.closed = True


def gold_doc(catalog: Catalog, specs):
    pool = judged_pool(catalog.rows)
    return parse_gold({"judged": sorted(r["file"] for r in pool), "queries": [
        {"id": i, "short": s, "descriptive": d, "expr": e, "tags": t, "relevant": compute_relevance(e, pool)}
        for i, s, d, e, t in specs]})


SPECS = [
    ("cat", "cat", "a cat sitting", "cat", ["object"]),
    ("dog", "dog", "a dog outside", "dog", ["object"]),
    ("bear", "bear", "a wild bear", "bear", ["object", "lexical-trap"]),
    ("cat-laptop", "cat laptop", "a cat with a laptop", "cat & laptop", ["conjunction"]),
]


@pytest.fixture
def synthetic(tmp_path):
    catalog = make_catalog(tmp_path / "cat")
    return catalog, gold_doc(catalog, SPECS[:3])


# ---------------------------------------------------------------- reranker


class FakeClip:
    def __init__(self, text_vec, image_vecs):
        self.text_vec, self.image_vecs, self.encoded = text_vec, image_vecs, []

    def get_text_embedding(self, text):
        return self.text_vec

    def get_image_embeddings(self, images):
        self.encoded += [Path(p).name for p in images]
        return [self.image_vecs[Path(p).name] for p in images]


def _results(names):
    return [Result(n, f"/x/{n}", 1.0 / i, i, {"clip": None, "caption": i, "bm25": None}, n) for i, n in enumerate(names, 1)]


def test_rerank_orders_head_by_clip_cosine_and_keeps_tail():
    clip = FakeClip([1.0, 0.0], {"a": [0.0, 1.0], "b": [1.0, 0.1], "c": [0.7, 0.7], "d": [1.0, 0.0]})
    out = Reranker(clip, top_k=3).rerank("q", _results(["a", "b", "c", "d"]))
    assert [r.id for r in out] == ["b", "c", "a", "d"]  # d (perfect match) is past top_k: stays last
    assert [r.rank for r in out] == [1, 2, 3, 4]
    assert out[0].metadata["fused_rank"] == 2 and out[0].score == pytest.approx(1 / np.hypot(1, 0.1))
    assert "fused_rank" not in out[3].metadata
    # image vectors are cached by id: a second query encodes nothing new
    Reranker.rerank  # noqa: B018
    r = Reranker(clip, top_k=3)
    r.rerank("q", _results(["a", "b", "c"]))
    n = len(clip.encoded)
    r.rerank("q2", _results(["c", "a"]))
    assert len(clip.encoded) == n


def test_rerank_uses_stored_vectors_when_given():
    clip = FakeClip([0.0, 1.0], {})
    lookup = lambda results: np.array([[0.0, 1.0] if r.id == "z" else [1.0, 0.0] for r in results])  # noqa: E731
    out = Reranker(clip, top_k=5, image_vectors=lookup).rerank("q", _results(["y", "z"]))
    assert [r.id for r in out] == ["z", "y"] and clip.encoded == []


class FakeVLM:
    def __init__(self, answers):
        self.answers, self.asked = answers, []

    def chat_image(self, image, prompt):
        self.asked.append(Path(image).name)
        answer = self.answers[Path(image).name]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_rerank_vlm_yes_first_and_failures_are_neutral():
    vlm = FakeVLM({"a": "No.", "b": "Yes, it does.", "c": MmragError("timeout"), "d": "yes"})
    out = Reranker(None, top_k=10, vlm=vlm, vlm_top_k=3).rerank("a cat", _results(["a", "b", "c", "d"]))
    assert [r.id for r in out] == ["b", "c", "a", "d"]  # yes, unknown, no; d was not asked
    assert vlm.asked == ["a", "b", "c"]
    assert out[0].metadata["vlm_judgement"] is True and out[1].metadata["vlm_judgement"] is None


def test_parse_yes_no_and_errors():
    assert parse_yes_no(" Yes") is True and parse_yes_no("no, a dog") is False and parse_yes_no("maybe") is None
    assert parse_yes_no("Nothing here") is None
    with pytest.raises(MmragError):
        Reranker(None)
    with pytest.raises(MmragError):
        Reranker(FakeClip([1.0], {}), top_k=2).rerank("  ", _results(["a"]))


# ---------------------------------------------------------------- runner on the synthetic engine


def test_run_config_scores_judged_top10(synthetic):
    catalog, gold = synthetic
    engine = FakeEngine(catalog)
    res = run_config(engine, RunConfig(IndexSpec(), "bm25"), gold, catalog, k=50)
    by_id = {pq["id"]: pq for pq in res.per_query}
    # "a cat sitting": bm25 words a/cat/sitting -> unj (3 words, unjudged) first, then cat1 / dog2 (2 words) ...
    cat = by_id["cat"]
    assert cat["top"][0]["file"] == "images/unj.jpg" and not cat["top"][0]["judged"]
    assert cat["judged_top10"][:2] == ["images/cat1.jpg", "images/dog2.jpg"]
    assert cat["metrics"]["mrr"] == 1.0  # the unjudged first hit is condensed away
    # relevant: cat1, cat2, cat3, dog2; cat3 has no caption (its text 'cat3' is not the word 'cat'): recall@10 = 3/4
    assert cat["metrics"]["r@10"] == pytest.approx(3 / 4)
    assert "images/cat3.jpg" not in cat["judged_top10"]
    # "a wild bear": bm25 finds teddy (judged, not relevant) and bear1 — both contain 'a' and 'bear'
    assert by_id["bear"]["metrics"]["r@10"] == 1.0
    assert res.summary["n_queries"] == 3 and "p50_ms" not in res.summary  # latency comes from measure_latency
    assert res.summary["mrr"] == pytest.approx(np.mean([pq["metrics"]["mrr"] for pq in res.per_query]))
    assert len(engine.calls) == 3 and all(c[2] == 50 for c in engine.calls)


def test_measure_latency_interleaves_configs(synthetic):
    catalog, gold = synthetic
    engine = FakeEngine(catalog)
    cfgs = [RunConfig(IndexSpec(), m) for m in ("caption", "bm25", "hybrid")]
    lat = measure_latency(engine, cfgs, gold, k=20, reps=3)
    assert set(lat) == {c.key() for c in cfgs} and all(len(v) == 3 and min(v) >= 0 for v in lat.values())
    # 3 warm-ups, then per query 3 repetitions of all 3 configs, the starting config rotating
    assert len(engine.calls) == 3 + 3 * 3 * 3
    firsts = [engine.calls[3 + 3 * i][1] for i in range(9)]
    assert set(firsts) == {"caption", "bm25", "hybrid"}


def test_sweep_grid_and_folds(synthetic):
    _, gold = synthetic
    grid = sweep_grid(["caption", "bm25"])
    assert {"caption": 1.0, "bm25": 1.0} in grid and all("clip" not in w for w in grid)
    assert len(sweep_grid(["clip", "caption", "bm25"])) == 4 * len(grid)
    f = folds(gold)
    assert sorted(f[0] + f[1]) == sorted(q.id for q in gold.queries) and not set(f[0]) & set(f[1])


def test_analyse_sweep_picks_best_and_cross_validates(synthetic):
    catalog, gold = synthetic
    engine = FakeEngine(catalog)
    points = []
    for w in ({"caption": 1.0, "bm25": 0.0}, {"caption": 1.0, "bm25": 1.0}, {"caption": 1.0, "bm25": 4.0}):
        runs = [run_config(engine, RunConfig(IndexSpec(), "hybrid", f, tuple(sorted(w.items()))), gold, catalog) for f in ("short", "descriptive")]
        points.append((w, runs))
    sweep = analyse_sweep(points, gold, {"caption": 1.0, "bm25": 1.0})
    means = [row["ndcg@10"] for row in sweep["table"]]
    assert sweep["best"]["ndcg@10"] == max(means)
    assert sweep["default"]["weights"] == {"caption": 1.0, "bm25": 1.0}
    assert len(sweep["cv"]) == 2 and all(cv["default_test"] is not None for cv in sweep["cv"])


# ---------------------------------------------------------------- failure classification


def test_expr_categories_and_mentions():
    assert expr_categories("dog & !person") == (["dog"], ["person"])
    assert expr_categories("(cat | dog) & !(laptop | tv)") == (["cat", "dog"], ["laptop", "tv"])
    assert mentions("A Teddy Bear on a bed", "teddy bear") and not mentions("A teddy bear on a bed", "bear")
    assert mentions("two brown bears", "bear") and mentions("a purse on a chair", "handbag")
    assert not mentions("a catalog", "cat")


def test_classify_causes(synthetic):
    catalog, gold = synthetic
    rows = {r["file"]: r for r in catalog.rows}
    cat, bear = gold.queries[0], gold.queries[2]
    assert classify_miss(cat, rows["images/cat3.jpg"], {"caption": 9, "bm25": None})[0] == "no-caption"
    assert classify_miss(cat, {"captions": ["a sofa"], "categories": ["cat"]}, {})[0] == "caption-omits"
    assert classify_miss(cat, rows["images/cat1.jpg"], {"caption": 3, "bm25": 40})[:2] == ("fusion-diluted", "bm25 (via fusion)")
    cause, _, why = classify_miss(cat, {"captions": ["a kitten on a mat"], "categories": ["cat"]}, {"caption": 30, "bm25": None})
    assert cause == "vocabulary-mismatch" and "'kitten'" in why
    cause, blamed, _ = classify_wrong(bear, rows["images/teddy.jpg"], {"caption": 4, "bm25": 1})
    assert (cause, blamed) == ("lexical-trap", "bm25")
    neg = parse_gold({"judged": ["images/dog1.jpg"], "queries": [
        {"id": "n", "short": "x", "descriptive": "xy", "expr": "dog & !cat", "relevant": ["images/dog1.jpg"]}]}).queries[0]
    assert classify_wrong(neg, rows["images/dog2.jpg"], {"caption": 1})[0] == "negation"
    conj = parse_gold({"judged": ["images/laptop.jpg"], "queries": [
        {"id": "c", "short": "x", "descriptive": "xy", "expr": "cat & laptop", "relevant": ["images/laptop.jpg"]}]}).queries[0]
    assert classify_wrong(conj, rows["images/cat1.jpg"], {"bm25": 2})[0] == "half-conjunction"


def test_experiments_and_report_on_synthetic_engine(synthetic, tmp_path):
    catalog, gold = synthetic
    engines = []

    def factory(spec, settings, cat, progress):
        assert settings.uri is None and settings.data_dir.parent == tmp_path / "out" / "_work"
        engines.append((spec, FakeEngine(cat)))
        return engines[-1][1], {"indexed": 0}

    opts = EvalOptions(catalog.root, gold, tmp_path / "out", text_models=("tm-a", "tm-b"), clip_models=("clip-a",),
                       caption_sources=("catalog", "ocr", "vlm"), show_progress=False)
    doc = run_experiments(opts, Settings(data_dir=tmp_path / "d", clip_model=None), engine_factory=factory,
                          clip_status={"clip-a": NO_CLIP})
    statuses = {r["label"]: r["status"] for r in doc["tables"]["modes"]}
    assert statuses == {"clip": NO_CLIP, "caption": "ok", "bm25": "ok", "hybrid": "ok", "hybrid+rerank": NO_CLIP}
    assert {r["status"] for r in doc["tables"]["clip_models"]} == {NO_CLIP}
    assert [r["status"] for r in doc["tables"]["caption_sources"] if r["label"].startswith("vlm")] == ["not run (no VLM configured)"] * 3
    # one engine per index spec (tm-a catalog, tm-b catalog, tm-a ocr), every one closed
    assert sorted(s.slug() for s, _ in engines) == sorted({s.slug() for s, _ in engines}) and len(engines) == 3
    assert all(e.closed for _, e in engines)
    assert doc["sweep"]["best"]["weights"]["caption"] == 1.0 and "clip" not in doc["sweep"]["retrievers"]
    assert set(doc["pair_scores"]) == {"caption", "bm25"}
    paths = write_report(doc, gold, catalog, tmp_path / "out")
    report = paths["report"].read_text()
    assert "not run (no CLIP weights)" in report and "Recommendation" in report and "Caused by" in report
    # the synthetic gold reuses translated ids (cat, dog, bear): the multilingual table renders from the same document
    assert "### Multilingual queries" in report and doc["query_tables"]["multilingual"]["rows"]
    assert paths["similarity"].stat().st_size > 1000 and paths["thumbnails"].is_file() and paths["sweep"].is_file()
    saved = json.loads(paths["results"].read_text())
    key = next(r["key"] for r in saved["tables"]["modes"] if r["label"] == "bm25")
    assert saved["runs"][key]["summary"]["mrr"] == pytest.approx(doc["runs"][key]["summary"]["mrr"])
    assert "rankings" not in saved and (tmp_path / "out" / "_work" / "full_results.json").is_file()


# ---------------------------------------------------------------- end to end on a real slice (real index + search)


def _slice(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    """~30 real catalog images: every judged giraffe/pizza image, distractors, unjudged and caption-less rows."""
    rows = [json.loads(line) for line in (SHARED / "metadata.jsonl").read_text().splitlines() if line.strip()]
    pick = [r for r in rows if r["categories_known"] and r["source"] == "coco2017" and {"giraffe", "pizza"} & set(r["categories"])]
    others = [r for r in rows if r not in pick]
    pick += [r for r in others if r["categories_known"] and r["captions"]][:12]
    pick += [r for r in others if r["categories_known"] and not r["captions"] and r["source"] == "coco2017"][:3]
    pick += [r for r in others if not r["categories_known"]][:2] + [r for r in others if r["source"] != "coco2017"][:2]
    root = tmp_path / "slice"
    (root / "images").mkdir(parents=True)
    for r in pick:
        (root / r["file"]).symlink_to(SHARED / r["file"])
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pick))
    pool = judged_pool(pick)
    giraffe = next(r for r in pick if "giraffe" in r["categories"] and r["captions"])
    queries = [
        # the descriptive form is one image's own first caption: caption retrieval must rank that image first
        {"id": "giraffe", "short": "giraffe", "descriptive": giraffe["captions"][0], "expr": "giraffe"},
        {"id": "pizza", "short": "pizza", "descriptive": "a pizza with cheese on a plate", "expr": "pizza"},
    ]
    for q in queries:
        q["relevant"] = compute_relevance(q["expr"], pool)
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps({"judged": sorted(r["file"] for r in pool), "queries": queries}))
    return root, gold, pick


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "metadata.jsonl").is_file(), reason="sample catalog ../shared/data/retrieval not present")
def test_mmrag_eval_end_to_end_on_a_slice(tmp_path, capsys):
    from eval.cli import main
    from eval.metrics import condense, query_metrics
    from rag.search import SearchEngine

    root, gold_path, pick = _slice(tmp_path)
    out = tmp_path / "report"
    argv = ["--catalog", str(root), "--gold", str(gold_path), "--out", str(out), "--text-models", "all-MiniLM-L6-v2",
            "--clip-models", "none", "--caption-sources", "catalog", "--no-progress", "--threads", "0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "clip: not run (no CLIP weights)" in printed and "hybrid+rerank: not run (no CLIP weights)" in printed
    doc = json.loads((out / "results.json").read_text())
    modes = {r["label"]: r for r in doc["tables"]["modes"]}
    assert modes["clip"]["status"] == NO_CLIP and modes["clip"]["key"] is None
    gold = load_gold(gold_path)
    caption = doc["runs"][modes["caption"]["key"]]
    by_id = {pq["id"]: pq for pq in caption["per_query"]}
    giraffe = next(r for r in pick if "giraffe" in r["categories"] and r["captions"])
    assert by_id["giraffe"]["top"][0][0] == giraffe["file"] and by_id["giraffe"]["metrics"]["mrr"] == 1.0

    # the stored metrics are exactly what the engine's own ranking gives, condensed to the judged pool
    work = out / "_work"
    slug = doc["meta"]["base_index"]
    assert (work / slug).is_dir() and doc["index_reports"][slug]["indexed"] == len(pick)
    settings = Settings(data_dir=work / slug, clip_model=None, text_model="all-MiniLM-L6-v2")
    with SearchEngine.open(settings) as engine:
        for q in gold.queries:
            response = engine.search(q.descriptive, mode="caption", k=50)
            files = ["images/" + Path(r.path).name for r in response.results]
            expected = query_metrics(condense(files, gold.judged), q.relevant)
            assert by_id[q.id]["metrics"] == pytest.approx(expected, abs=1e-4)  # results.json rounds to 4 places
    # unjudged and caption-less images are in the index but never scored
    assert doc["meta"]["n_judged"] == len(gold.judged) < len(pick)
    report = (out / "report.md").read_text()
    assert "## 10. Failure analysis" in report and "not run (no CLIP weights)" in report
    assert (out / "similarity_histograms.png").stat().st_size > 5000 and (out / "best_worst_top5.png").is_file()

    # a re-run reuses the cached work index: nothing is embedded again
    assert main(argv + ["--no-sweep", "--modes", "caption,bm25"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["index_reports"][slug]["indexed"] == 0 and again["index_reports"][slug]["already_indexed"] == len(pick)


def test_cli_rejects_bad_input_in_one_line(tmp_path, capsys):
    from eval.cli import main

    catalog = make_catalog(tmp_path / "cat")
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps({"judged": ["images/cat1.jpg"], "queries": [
        {"id": "q", "short": "cat", "descriptive": "a cat", "expr": "cat", "relevant": ["images/nope.jpg"]}]}))
    assert main(["--catalog", str(catalog.root), "--gold", str(gold), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown file 'images/nope.jpg'" in err
    assert main(["--catalog", str(tmp_path / "missing"), "--gold", str(gold)]) == 2
    assert "catalog not found" in capsys.readouterr().err
    gold.write_text(json.dumps({"judged": ["images/cat1.jpg"], "queries": [
        {"id": "q", "short": "cat", "descriptive": "a cat", "expr": "cat", "relevant": ["images/cat1.jpg"]}]}))
    assert main(["--catalog", str(catalog.root), "--gold", str(gold), "--modes", "caption,telepathy"]) == 2
    assert "unknown mode telepathy" in capsys.readouterr().err
    assert main(["--catalog", str(catalog.root), "--gold", str(gold), "--queries", "zzz"]) == 2
    assert "unknown query id(s) zzz" in capsys.readouterr().err
