"""Retrieval eval runner: index the sample catalog into work folders, run the gold queries per configuration,
score them, and collect everything the report and plots need into one JSON-able dict.

Each index configuration (text model, CLIP model, caption source) gets its own data dir under
`<out>/_work/`, so the user's index is never touched and a re-run only re-opens the cached indexes.
Quality numbers are only produced from real CLIP weights: a CLIP folder whose logit_scale still
equals its initial value (e.g. `rag.dev.random_clip`) gives latency rows only.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from eval.gold import GoldSet, read_metadata
from eval.metrics import bootstrap_ci, condense, latency_summary, mean_metrics, query_metrics
from rag.config import DEFAULT_CLIP_MODEL, DEFAULT_TEXT_MODEL, Settings
from rag.errors import MmragError, ModelUnavailableError

log = logging.getLogger(__name__)

ALL_MODES = ("clip", "caption", "bm25", "hybrid", "hybrid+rerank")  # ("ocr" runs in the OCR-channel table)
SINGLE_RETRIEVERS = ("clip", "caption", "bm25")
FORMS = ("short", "descriptive")
PRIMARY_FORM = "descriptive"
CAPTION_SOURCES = ("catalog", "catalog+ocr", "ocr", "vlm")
DEFAULT_CLIP_MODELS = (DEFAULT_CLIP_MODEL, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
DEFAULT_TEXT_MODELS = (DEFAULT_TEXT_MODEL, "multilingual-e5-small")
K_FETCH = 50  # results fetched per query; metrics use the first 10 *judged* ones
RERANK_TOP_K = 20
NO_CLIP = "not run (no CLIP weights)"
NO_VLM = "not run (no VLM configured)"

# bm25/caption weight ratios tried by the sweep (caption weight 1); clip weights when CLIP is real.
SWEEP_BM25 = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
SWEEP_CLIP = (0.0, 0.5, 1.0, 2.0)


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class IndexSpec:
    """What one work index holds: caption text model, CLIP model (or none), where caption text comes from."""

    text_model: str = DEFAULT_TEXT_MODEL
    clip_model: str | None = None
    # catalog (metadata sidecar) | catalog+ocr (sidecar captions, OCR text in its own channel) | ocr (OCR text only)
    # | vlm (VLM captions)
    caption_source: str = "catalog"

    def slug(self) -> str:
        def s(x: str | None) -> str:
            return re.sub(r"[^A-Za-z0-9]+", "-", Path(x).name if x and Path(x).exists() else (x or "noclip")).strip("-").lower()

        return f"{s(self.text_model)}__{s(self.clip_model)}__{self.caption_source.replace('+', '-')}"


@dataclass(frozen=True)
class RunConfig:
    index: IndexSpec
    mode: str  # clip | caption | bm25 | hybrid | hybrid+rerank
    form: str = PRIMARY_FORM
    weights: tuple[tuple[str, float], ...] | None = None
    vlm_judge: bool = False

    @property
    def base_mode(self) -> str:
        return self.mode.split("+")[0]

    @property
    def rerank(self) -> bool:
        return self.mode.endswith("+rerank")

    def key(self) -> str:
        w = "" if self.weights is None else "|w=" + ",".join(f"{k}={v:g}" for k, v in self.weights)
        return f"{self.index.slug()}|{self.mode}{'+vlm' if self.vlm_judge else ''}|{self.form}{w}"


def weights_tuple(weights: dict[str, float] | None) -> tuple[tuple[str, float], ...] | None:
    return None if weights is None else tuple(sorted((k, float(v)) for k, v in weights.items()))


# ---------------------------------------------------------------- catalog


@dataclass
class Catalog:
    """The sample catalog: image folder + metadata rows; maps result paths back to metadata 'file' names."""

    root: Path
    metadata_path: Path
    rows: list[dict[str, Any]]
    by_name: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, metadata: Path | None = None) -> "Catalog":
        root = Path(root)
        meta = Path(metadata) if metadata else root / "metadata.jsonl"
        rows = read_metadata(meta)
        images = root / "images"
        if not images.is_dir():
            raise MmragError(f"catalog folder {root} has no images/ folder")
        return cls(root, meta, rows, {Path(r["file"]).name: r["file"] for r in rows})

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def files(self) -> set[str]:
        return {r["file"] for r in self.rows if (self.root / r["file"]).is_file()}

    def file_of(self, path: str | Path) -> str | None:
        return self.by_name.get(Path(path).name)

    def row(self, file: str) -> dict[str, Any]:
        for r in self.rows:
            if r["file"] == file:
                return r
        raise KeyError(file)


# ---------------------------------------------------------------- clip weights


def clip_weights_status(model_id: str) -> str:
    """'ok' for trained weights, 'speed only (...)' for untrained ones, 'not run (...)' if they cannot load."""
    try:
        clip = shared_clip(model_id)
    except ModelUnavailableError:
        return NO_CLIP
    model = clip._model  # noqa: SLF001 - the only way to see the learned temperature
    scale = getattr(model, "logit_scale", None)
    init = getattr(model.config, "logit_scale_init_value", None)
    if scale is not None and init is not None and abs(float(scale.detach().reshape(-1)[0]) - float(init)) < 1e-6:
        return "speed only (untrained CLIP weights: logit_scale is still its initial value)"
    return "ok"


# ---------------------------------------------------------------- running queries


def _result_file(catalog: Catalog, result: Any) -> str | None:
    return catalog.file_of(result.path)


def _search(engine: Any, cfg: RunConfig, text: str, k: int, reranker: Any) -> Any:
    weights = dict(cfg.weights) if cfg.weights is not None else None
    response = engine.search(text, mode=cfg.base_mode, k=k, weights=weights)
    if cfg.rerank:
        response = reranker.rerank_response(response)
    return response


@dataclass
class RunResult:
    config: RunConfig
    status: str  # "ok" | "speed only (...)" | "not run (...)"
    per_query: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def has_quality(self) -> bool:
        return self.status == "ok"

    def values(self, metric: str) -> list[float]:
        return [q["metrics"][metric] for q in self.per_query if q.get("metrics")]

    def to_dict(self, *, detail: bool = True) -> dict[str, Any]:
        c = self.config
        out = {
            "key": c.key(), "mode": c.mode, "form": c.form, "text_model": c.index.text_model,
            "clip_model": c.index.clip_model, "caption_source": c.index.caption_source,
            "weights": dict(c.weights) if c.weights is not None else None, "vlm_judge": c.vlm_judge,
            "status": self.status, "summary": self.summary,
        }
        if detail:
            out["per_query"] = self.per_query
        return out


def run_config(
    engine: Any, cfg: RunConfig, gold: GoldSet, catalog: Catalog, *, k: int = K_FETCH, reranker: Any = None,
    show_progress: bool = False,
) -> RunResult:
    """Run every gold query through one configuration and score its judged top-10 (latency: measure_latency)."""
    per_query = []
    for q in tqdm(gold.queries, desc=cfg.key()[-60:], disable=not show_progress, leave=False):
        text = q.text(cfg.form)
        response = _search(engine, cfg, text, k, reranker)
        files = [_result_file(catalog, r) for r in response.results]
        ranked = condense([f for f in files if f], gold.judged)
        top10 = files[:10]
        per_query.append({
            "id": q.id, "text": text, "metrics": query_metrics(ranked, q.relevant),
            "unjudged_top10": sum(1 for f in top10 if f not in gold.judged) / max(1, len(top10)),
            "judged_top10": ranked[:10],
            "top": [{"file": f, "rank": r.rank, "score": float(r.score), "ranks": dict(r.ranks or {}),
                     "judged": f in gold.judged, "relevant": f in q.relevant}
                    for f, r in zip(files[:15], response.results[:15])],
        })
    return RunResult(cfg, "ok", per_query, summarize(per_query))


def measure_latency(engine: Any, cfgs: Sequence[RunConfig], gold: GoldSet, *, k: int = K_FETCH,
                    rerankers: dict[bool, Any] | None = None, reps: int = 3, show_progress: bool = False) -> dict[str, list[float]]:
    """Per-query latency (ms, median of `reps` calls) of each configuration.

    Calls are interleaved (query by query, configurations in rotating order) so that load from other
    processes on a shared machine hits every configuration alike; one warm-up call per configuration first.
    """
    rerankers = rerankers or {}
    if not gold.queries or not cfgs:
        return {}
    for cfg in cfgs:
        _search(engine, cfg, gold.queries[0].text(cfg.form), k, rerankers.get(cfg.vlm_judge))
    times: dict[str, list[list[float]]] = {c.key(): [[] for _ in gold.queries] for c in cfgs}
    turn = 0
    for qi, q in enumerate(tqdm(gold.queries, desc="latency", disable=not show_progress, leave=False)):
        for _ in range(reps):
            turn += 1
            for cfg in [*cfgs[turn % len(cfgs):], *cfgs[:turn % len(cfgs)]]:
                t0 = time.perf_counter()
                _search(engine, cfg, q.text(cfg.form), k, rerankers.get(cfg.vlm_judge))
                times[cfg.key()][qi].append((time.perf_counter() - t0) * 1000)
    return {key: [float(np.median(t)) for t in per_q] for key, per_q in times.items()}


def summarize(per_query: list[dict[str, Any]], quality: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if all("latency_ms" in q for q in per_query):
        out.update(latency_summary([q["latency_ms"] for q in per_query]))
    if quality and per_query:
        out.update(mean_metrics(q["metrics"] for q in per_query))
        lo, hi = bootstrap_ci([q["metrics"]["ndcg@10"] for q in per_query])
        out["ndcg@10_ci95"] = [lo, hi]
        out["unjudged_top10"] = float(np.mean([q["unjudged_top10"] for q in per_query]))
    out["n_queries"] = len(per_query)
    return out


def full_rankings(engine: Any, mode: str, gold: GoldSet, catalog: Catalog, form: str) -> dict[str, dict[str, tuple[int, float]]]:
    """Every query's complete single-retriever ranking: qid -> file -> (1-based rank, score). Untimed."""
    n = engine.count() or len(catalog.rows)
    out: dict[str, dict[str, tuple[int, float]]] = {}
    for q in gold.queries:
        response = engine.search(q.text(form), mode=mode, k=n)
        ranks: dict[str, tuple[int, float]] = {}
        for r in response.results:
            f = _result_file(catalog, r)
            if f and f not in ranks:
                ranks[f] = (int(r.rank), float(r.score))
        out[q.id] = ranks
    return out


def pair_scores(rankings: dict[str, dict[str, tuple[int, float]]], gold: GoldSet, *, missing: float | None = None) -> dict[str, list[float]]:
    """Scores of (query, judged image) pairs split by relevance; images a retriever did not return get
    `missing` (BM25: 0.0, no term overlap) or are skipped (None)."""
    rel: list[float] = []
    non: list[float] = []
    for q in gold.queries:
        ranks = rankings.get(q.id, {})
        for f in gold.judged:
            score = ranks[f][1] if f in ranks else missing
            if score is None:
                continue
            (rel if f in q.relevant else non).append(score)
    return {"relevant": rel, "nonrelevant": non}


# ---------------------------------------------------------------- weight sweep


def sweep_grid(retrievers: Sequence[str]) -> list[dict[str, float]]:
    grid = []
    clips = SWEEP_CLIP if "clip" in retrievers else (None,)
    for c in clips:
        for b in SWEEP_BM25:
            w = {"caption": 1.0, "bm25": b}
            if c is not None:
                w["clip"] = c
            grid.append(w)
    return grid


def folds(gold: GoldSet, n: int = 2) -> list[list[str]]:
    """Deterministic interleaved split of query ids (sorted) into n folds."""
    ids = sorted(q.id for q in gold.queries)
    return [ids[i::n] for i in range(n)]


def _mean_over(results: Iterable[RunResult], ids: set[str], metric: str) -> float:
    vals = [q["metrics"][metric] for r in results for q in r.per_query if q["id"] in ids]
    return float(np.mean(vals)) if vals else float("nan")


def analyse_sweep(points: list[tuple[dict[str, float], list[RunResult]]], gold: GoldSet, default: dict[str, float],
                  metric: str = "ndcg@10") -> dict[str, Any]:
    """Pick the best weights on all queries and check them with 2-fold cross-validation.

    points: (weights, [RunResult per query form]). Selection averages both forms.
    """
    all_ids = {q.id for q in gold.queries}
    table = [{"weights": w, metric: _mean_over(rs, all_ids, metric),
              **{f"{metric}_{r.config.form}": _mean_over([r], all_ids, metric) for r in rs}} for w, rs in points]
    best = max(table, key=lambda row: (row[metric], -abs(row["weights"].get("bm25", 1) - 1)))
    default_row = next((row for row in table if _same(row["weights"], default)), None)
    cv = []
    for i, test in enumerate(folds(gold)):
        train = all_ids - set(test)
        scored = [(w, _mean_over(rs, train, metric), _mean_over(rs, set(test), metric)) for w, rs in points]
        chosen = max(scored, key=lambda s: s[1])
        dflt = next((s for s in scored if _same(s[0], default)), None)
        cv.append({"fold": i + 1, "n_test": len(test), "chosen": chosen[0], "train": chosen[1], "test": chosen[2],
                   "default_test": dflt[2] if dflt else None})
    return {"metric": metric, "table": table, "best": best, "default": default_row, "cv": cv}


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    keys = set(a) | set(b)
    return all(abs(a.get(k, 1.0) - b.get(k, 1.0)) < 1e-9 for k in keys if k in a)


# ---------------------------------------------------------------- experiments


@dataclass
class EvalOptions:
    catalog_dir: Path
    gold: GoldSet
    out_dir: Path
    modes: tuple[str, ...] = ALL_MODES
    clip_models: tuple[str, ...] = DEFAULT_CLIP_MODELS
    text_models: tuple[str, ...] = DEFAULT_TEXT_MODELS
    caption_sources: tuple[str, ...] = CAPTION_SOURCES
    forms: tuple[str, ...] = FORMS
    sweep: bool = True
    rerank_vlm: bool = False
    k: int = K_FETCH
    metadata: Path | None = None
    show_progress: bool = True
    query_tables: str = "on"  # on | off | only: the negation, composite and multilingual tables (eval/query_tables.py)
    multilingual: Path | None = None  # hand translations of the gold queries (None: eval/multilingual_queries.json)
    absent: Path | None = None  # absent queries for the no-match table (None: eval/absent_queries.json; skipped if missing)


EngineFactory = Callable[[IndexSpec, Settings, Catalog, bool], tuple[Any, dict[str, Any]]]

# Models are loaded once per process and shared by indexing, search and the CLIP status probe.
_MODELS: dict[tuple[str, str], Any] = {}


def shared_text_embedder(name: str) -> Any:
    from rag.text_embedding import make_text_embedder

    if ("text", name) not in _MODELS:
        _MODELS[("text", name)] = make_text_embedder(name)
    return _MODELS[("text", name)]


def shared_clip(name: str | None) -> Any:
    from rag.clip_embedding import load_clip

    if name is None:
        return None
    if ("clip", name) not in _MODELS:
        _MODELS[("clip", name)] = load_clip(name)
    return _MODELS[("clip", name)]


def default_engine_factory(spec: IndexSpec, settings: Settings, catalog: Catalog, show_progress: bool) -> tuple[Any, dict[str, Any]]:
    """Index the catalog into settings.data_dir (only new images are embedded) and open a SearchEngine on it."""
    from ingest.pipeline import index_folder
    from rag.search import SearchEngine

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    clip, text = shared_clip(spec.clip_model), shared_text_embedder(spec.text_model)
    metadata = catalog.metadata_path if spec.caption_source in ("catalog", "catalog+ocr") else None
    report = index_folder(catalog.images_dir, settings, metadata=metadata, ocr=spec.caption_source in ("ocr", "catalog+ocr"),
                          vlm_captions=spec.caption_source == "vlm", show_progress=show_progress, clip=clip, text_embedder=text)
    info = {"indexed": report.indexed, "already_indexed": report.already_indexed, "bad_files": len(report.bad_files),
            "total_in_store": report.total_in_store, "index_seconds": round(report.seconds, 1)}
    return SearchEngine.open(settings, clip=clip, text_embedder=text), info


def work_settings(base: Settings, spec: IndexSpec, work_root: Path) -> Settings:
    # Always embedded Milvus Lite under _work/: never the user's store (uri cleared on purpose).
    return replace(base, data_dir=work_root / spec.slug(), uri=None, token="", collection_prefix="mmrag",
                   clip_model=spec.clip_model, text_model=spec.text_model)


def plan(opts: EvalOptions, clip_status: dict[str, str], vlm_ready: bool) -> dict[str, Any]:
    """Which index specs and run configs each experiment table needs (configs shared across tables)."""
    base_text = opts.text_models[0]
    real_clips = [m for m in opts.clip_models if clip_status.get(m) == "ok"]
    base_clip = real_clips[0] if real_clips else None
    base = IndexSpec(base_text, base_clip, "catalog")
    modes = [m for m in opts.modes]
    tables: dict[str, list[tuple[str, RunConfig | None, str]]] = defaultdict(list)  # label, config, status-if-not-run
    if opts.query_tables == "only":
        return {"base": base, "tables": {}}

    def add(table: str, label: str, cfg: RunConfig) -> None:
        needs_clip = cfg.base_mode == "clip" or (cfg.rerank and not cfg.vlm_judge)
        if needs_clip and cfg.index.clip_model is None:
            tables[table].append((label, None, NO_CLIP))
        elif cfg.index.caption_source == "vlm" and not vlm_ready:
            tables[table].append((label, None, NO_VLM))
        else:
            tables[table].append((label, cfg, ""))

    for m in modes:
        add("modes", m, RunConfig(base, m))
    for form in opts.forms:
        for m in modes:
            add("forms", f"{m} / {form}", RunConfig(base, m, form))
    for cm in opts.clip_models:
        status = clip_status.get(cm, NO_CLIP)
        spec = IndexSpec(base_text, cm if status != NO_CLIP else None, "catalog")
        for m in ("clip", "hybrid", "hybrid+rerank"):
            label = f"{cm} / {m}"
            if status == NO_CLIP:
                tables["clip_models"].append((label, None, NO_CLIP))
            else:
                tables["clip_models"].append((label, RunConfig(spec, m), ""))
    for tm in opts.text_models:
        for m in ("caption", "hybrid"):
            add("text_models", f"{tm} / {m}", RunConfig(IndexSpec(tm, base_clip, "catalog"), m))
    for src in opts.caption_sources:
        for m in ("caption", "bm25", "hybrid"):
            add("caption_sources", f"{src} / {m}", RunConfig(IndexSpec(base_text, base_clip, src), m))
    if "catalog+ocr" in opts.caption_sources:  # the OCR channel: text inside images, in its own BM25 field
        ocr_spec = IndexSpec(base_text, base_clip, "catalog+ocr")
        add("ocr_channel", "catalog captions, no OCR / hybrid", RunConfig(base, "hybrid"))
        add("ocr_channel", "catalog+ocr / hybrid, OCR channel weight 0", RunConfig(ocr_spec, "hybrid", weights=(("ocr", 0.0),)))
        add("ocr_channel", "catalog+ocr / hybrid with the OCR channel", RunConfig(ocr_spec, "hybrid"))
        add("ocr_channel", "catalog+ocr / OCR channel alone", RunConfig(ocr_spec, "ocr"))
    add("rerank", "hybrid (rerank off)", RunConfig(base, "hybrid"))
    add("rerank", "hybrid + CLIP rerank", RunConfig(base, "hybrid+rerank"))
    if opts.rerank_vlm and vlm_ready:
        add("rerank", "hybrid + CLIP rerank + VLM yes/no", RunConfig(base, "hybrid+rerank", vlm_judge=True))
    elif opts.rerank_vlm:
        tables["rerank"].append(("hybrid + CLIP rerank + VLM yes/no", None, NO_VLM))
    return {"base": base, "tables": dict(tables)}


def run_experiments(opts: EvalOptions, settings: Settings, *, engine_factory: EngineFactory = default_engine_factory,
                    clip_status: dict[str, str] | None = None) -> dict[str, Any]:
    """Run every experiment table; returns the results document (see retrieval_report for its rendering)."""
    catalog = Catalog.load(opts.catalog_dir, opts.metadata)
    gold = opts.gold
    work_root = opts.out_dir / "_work"
    if clip_status is None:
        clip_status = {m: clip_weights_status(m) for m in opts.clip_models}
    vlm_ready = bool(settings.vlm_base_url)
    layout = plan(opts, clip_status, vlm_ready)
    base: IndexSpec = layout["base"]
    configs: dict[str, RunConfig] = {}
    for rows in layout["tables"].values():
        for _, cfg, _ in rows:
            if cfg is not None:
                configs[cfg.key()] = cfg
    by_index: dict[IndexSpec, list[RunConfig]] = defaultdict(list)
    for cfg in configs.values():
        by_index[cfg.index].append(cfg)
    by_index.setdefault(base, [])
    translations = None
    if opts.query_tables != "off":
        from eval.query_tables import DEFAULT_MULTILINGUAL, load_translations

        translations = load_translations(opts.multilingual or DEFAULT_MULTILINGUAL, gold)
        for tm in opts.text_models:  # the multilingual table runs on each caption text model's index
            by_index.setdefault(IndexSpec(tm, base.clip_model, "catalog"), [])

    results: dict[str, RunResult] = {}
    extra: dict[str, Any] = {"rankings": {}, "pair_scores": {}, "sweep": None, "index_reports": {}, "load_average": {},
                             "no_match": None}
    t_start = time.time()
    for spec in sorted(by_index, key=lambda s: (s != base, s.slug())):
        quality = spec.clip_model is None or clip_status.get(spec.clip_model) == "ok"
        engine, info = engine_factory(spec, work_settings(settings, spec, work_root), catalog, opts.show_progress)
        try:
            records = engine.store.sample(limit=max(1, engine.count()))
            sources = Counter(src for r in records for src in r.get("caption_sources") or [])
            extra["index_reports"][spec.slug()] = {**info, "n_items": len(records), "caption_sources": dict(sources),
                                                   "available_modes": list(getattr(engine, "available_modes", []))}
            cfgs = by_index[spec]
            rerankers = _make_rerankers(engine, settings, any(c.vlm_judge for c in cfgs)) if any(c.rerank for c in cfgs) else {}
            for cfg in tqdm(cfgs, desc=f"runs {spec.slug()}", disable=not opts.show_progress):
                if quality:
                    results[cfg.key()] = run_config(engine, cfg, gold, catalog, k=opts.k, reranker=rerankers.get(cfg.vlm_judge))
                else:  # untrained weights: latency only, no quality numbers at all
                    results[cfg.key()] = RunResult(cfg, clip_status.get(spec.clip_model or "", "speed only"),
                                                   [{"id": q.id, "text": q.text(cfg.form)} for q in gold.queries])
            load_before = os.getloadavg()[0]
            latencies = measure_latency(engine, cfgs, gold, k=opts.k, rerankers=rerankers, show_progress=opts.show_progress)
            extra["load_average"][spec.slug()] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            for cfg in cfgs:
                run = results[cfg.key()]
                for pq, ms in zip(run.per_query, latencies.get(cfg.key(), [])):
                    pq["latency_ms"] = ms
                run.summary = summarize(run.per_query, run.has_quality)
            if spec == base and quality and opts.query_tables != "only":
                _base_extras(engine, spec, gold, catalog, opts, settings, extra, results)
            if translations is not None and quality and spec.caption_source == "catalog" and spec.clip_model == base.clip_model:
                from eval.query_tables import run_query_tables

                run_query_tables(engine, spec.text_model, gold, catalog, extra.setdefault("query_tables", {}),
                                 base=spec == base, forms=opts.forms, k=opts.k, translations=translations,
                                 progress=opts.show_progress)
        finally:
            engine.close()
    extra["encoder_latency"] = encoder_latency(gold, opts.forms) if opts.query_tables != "only" else {}
    extra["load_average"]["encoders"] = [round(os.getloadavg()[0], 2)] * 2
    return {
        "meta": {
            "catalog": str(catalog.root), "n_catalog": len(catalog.rows), "n_judged": len(gold.judged),
            "n_queries": len(gold.queries), "gold": str(gold.path or ""), "relevance_source": gold.relevance_source,
            "k_fetch": opts.k, "primary_form": PRIMARY_FORM, "clip_status": clip_status, "vlm_ready": vlm_ready,
            "base_index": base.slug(), "base_text_model": base.text_model, "base_clip_model": base.clip_model,
            "fusion_weights": dict(settings.fusion_weights), "rrf_k": settings.rrf_k,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t_start)), "elapsed_s": time.time() - t_start,
        },
        "tables": {name: [{"label": label, "key": cfg.key() if cfg else None, "status": status or results[cfg.key()].status}
                          for label, cfg, status in rows] for name, rows in layout["tables"].items()},
        "runs": {key: r.to_dict() for key, r in results.items()},
        **extra,
    }


def encoder_latency(gold: GoldSet, forms: Sequence[str], *, reps: int = 3) -> dict[str, dict[str, float]]:
    """Query-encoder latency of every model loaded in this process, interleaved so all see the same load."""
    encoders = {(f"{name} (caption text model)" if kind == "text" else f"{name} (CLIP text tower)"): model
                for (kind, name), model in _MODELS.items() if model is not None}
    if not encoders or not gold.queries:
        return {}
    texts = [q.text(f) for q in gold.queries for f in forms]
    for model in encoders.values():
        model.get_query_embedding("warm-up query")
    names = list(encoders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i, text in enumerate(texts):
        per: dict[str, list[float]] = {n: [] for n in names}
        for r in range(reps):
            turn = (i * reps + r) % len(names)
            for n in names[turn:] + names[:turn]:
                t0 = time.perf_counter()
                encoders[n].get_query_embedding(text)
                per[n].append((time.perf_counter() - t0) * 1000)
        for n in names:
            times[n].append(float(np.median(per[n])))
    return {n: latency_summary(v) for n, v in times.items()}


def _make_rerankers(engine: Any, settings: Settings, with_vlm: bool) -> dict[bool, Any]:
    """{False: CLIP-only reranker, True: CLIP + VLM yes/no} for one engine (image vectors shared)."""
    from rag.rerank import Reranker, store_vector_lookup

    clip = getattr(engine, "clip", None)
    out: dict[bool, Any] = {}
    if clip is not None:
        out[False] = Reranker(clip, top_k=RERANK_TOP_K, image_vectors=store_vector_lookup(engine))
        # fetch every image vector once, so query latency never includes first-time image lookups
        records = [SimpleNamespace(id=r["id"], path=r["path"]) for r in engine.store.sample(limit=max(1, engine.count()))]
        for start in range(0, len(records), 64):
            out[False]._image_matrix(records[start:start + 64])
    if with_vlm:
        from rag.vlm_client import VLMClient

        out[True] = Reranker(clip, top_k=RERANK_TOP_K, vlm=VLMClient.from_settings(settings),
                             image_vectors=store_vector_lookup(engine))
        if False in out:
            out[True]._cache = out[False]._cache
    return out


def no_match_table(engine: Any, spec: IndexSpec, gold: GoldSet, opts: EvalOptions, settings: Settings) -> dict[str, Any] | None:
    """The no-match calibration on the base index (fit on one seeded half, held-out numbers on the other), and
    whether the shipped thresholds file holds the same fit."""
    from eval.absent import DEFAULT_ABSENT, load_absent
    from eval.match_calibration import calibrate, compare_shipped

    path = opts.absent or DEFAULT_ABSENT
    if not Path(path).is_file() or not {"caption", "bm25", "clip"} & set(getattr(engine, "channel_names", [])):
        return None
    doc = calibrate(engine, gold, load_absent(path), show_progress=opts.show_progress)
    compare_shipped(doc, settings.match_thresholds, spec.text_model)
    return doc


def _base_extras(engine: Any, spec: IndexSpec, gold: GoldSet, catalog: Catalog, opts: EvalOptions, settings: Settings,
                 extra: dict[str, Any], results: dict[str, RunResult]) -> None:
    """Full single-retriever rankings (failure analysis, similarity histograms) and the weight sweep."""
    available = [m for m in SINGLE_RETRIEVERS if m in getattr(engine, "available_modes", SINGLE_RETRIEVERS)]
    if spec.clip_model is None and "clip" in available:
        available.remove("clip")
    for form in opts.forms:
        for mode in available:
            ranks = full_rankings(engine, mode, gold, catalog, form)
            extra["rankings"].setdefault(form, {})[mode] = {qid: {f: r for f, (r, _) in rk.items()} for qid, rk in ranks.items()}
            if form == PRIMARY_FORM:
                extra["pair_scores"][mode] = pair_scores(ranks, gold, missing=0.0 if mode == "bm25" else None)
    extra["no_match"] = no_match_table(engine, spec, gold, opts, settings)
    if not opts.sweep or "hybrid" not in getattr(engine, "available_modes", ("hybrid",)):
        return
    points = []
    grid = sweep_grid(available)
    for w in tqdm(grid, desc="weight sweep", disable=not opts.show_progress):
        runs = []
        for form in opts.forms:
            cfg = RunConfig(spec, "hybrid", form, weights_tuple(w))
            if cfg.key() not in results:
                results[cfg.key()] = run_config(engine, cfg, gold, catalog, k=opts.k)
            runs.append(results[cfg.key()])
        points.append((w, runs))
    default = {k: v for k, v in settings.fusion_weights.items() if k in available}
    extra["sweep"] = {**analyse_sweep(points, gold, default), "retrievers": available,
                      "keys": [[r.config.key() for r in runs] for _, runs in points]}
