"""`mmrag index|search|inspect|eval|app`: the command line. Errors are one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from rag.config import MODES, Settings, parse_weights
from rag.errors import MmragError


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("store and models")
    group.add_argument("--data-dir", type=Path, help="folder for the embedded store and caches (default ./mmrag_data, env MMRAG_DATA_DIR)")
    group.add_argument("--uri", help="Milvus URI: a Milvus Lite path ending in .db, or http://host:19530 for a server (env MMRAG_URI)")
    group.add_argument("--collection-prefix", help="collection name prefix (default mmrag)")
    group.add_argument("--clip-model", help="CLIP/SigLIP hub id or local folder, or 'none' (default openai/clip-vit-base-patch32; "
                       "search and app default to the model the index was built with)")
    group.add_argument("--text-model", help="caption text model: all-MiniLM-L6-v2 (default), multilingual-e5-small, "
                       "a sentence-transformers id/folder, or openai:text-embedding-3-small")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    clip = getattr(args, "clip_model", None)
    settings = settings.with_(data_dir=args.data_dir, uri=args.uri, collection_prefix=args.collection_prefix,
                              text_model=args.text_model, batch_size=getattr(args, "batch_size", None))
    if clip is not None:
        settings = settings.with_(clip_model=clip) if clip.lower() != "none" else _without_clip(settings)
    if getattr(args, "weights", None):
        settings = settings.with_(fusion_weights={**settings.fusion_weights, **parse_weights(args.weights)})
    return settings


def _without_clip(settings: Settings) -> Settings:
    from dataclasses import replace

    return replace(settings, clip_model=None)


# ---------------------------------------------------------------- index
def _add_index(sub: Any) -> None:
    p = sub.add_parser("index", help="index a folder (or one image) into both collections")
    p.add_argument("path", type=Path, help="folder of images, searched recursively")
    p.add_argument("--metadata", type=Path, help="catalog sidecar (JSONL or CSV: file + title/alt_text/captions/tags/...)")
    p.add_argument("--captioner", default="", help="extra caption sources, comma-separated: vlm (OpenAI-compatible endpoint), ocr (rapidocr)")
    p.add_argument("--clip-optional", action="store_true", help="if the CLIP model cannot be loaded, say so and index caption-side only")
    p.add_argument("--batch-size", type=int, help="images per embedding batch (default 32)")
    p.add_argument("--near-dup", type=float, default=0.95, help="report image pairs above this CLIP cosine (default 0.95)")
    p.add_argument("--json", action="store_true", help="print the run report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--native-hybrid", action="store_true", help="also mirror rows into the collection Milvus-native hybrid search uses")
    _add_common(p)
    p.set_defaults(func=cmd_index)


def cmd_index(args: argparse.Namespace) -> int:
    from ingest.pipeline import index_folder
    from rag.clip_embedding import load_clip
    from rag.errors import ModelUnavailableError

    settings = settings_from_args(args)
    if args.native_hybrid:
        os.environ["MMRAG_NATIVE_HYBRID"] = "1"
    sources = {s.strip() for s in args.captioner.split(",") if s.strip()}
    unknown = sources - {"vlm", "ocr"}
    if unknown:
        raise MmragError(f"unknown --captioner {', '.join(sorted(unknown))}: choose from vlm, ocr")
    clip = None
    if settings.clip_model:
        try:
            clip = load_clip(settings.clip_model, batch_size=settings.batch_size)
        except ModelUnavailableError as exc:
            if not args.clip_optional:
                raise
            print(f"mmrag: no CLIP weights ({settings.clip_model}): indexing caption-side only. {exc}", file=sys.stderr)
            settings = _without_clip(settings)
    report = index_folder(args.path, settings, metadata=args.metadata, ocr="ocr" in sources, vlm_captions="vlm" in sources,
                          show_progress=not args.quiet, clip=clip, near_duplicate_cosine=args.near_dup)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    side = f"CLIP {report.clip_model} + captions" if report.clip_model else "caption-side only (no CLIP)"
    print(f"indexed {report.indexed} new image(s), {report.already_indexed} already indexed, in {report.seconds:.1f} s; "
          f"store {settings.store_uri} holds {report.total_in_store}; {side}, text model {report.text_model}")
    for path, reason in report.bad_files:
        print(f"  skipped {path}: {reason}")
    for path, original in report.duplicates:
        print(f"  duplicate {path} = {original} (indexed once)")
    for a, b, cosine in report.near_duplicates:
        print(f"  near-duplicate {a[:12]} ~ {b[:12]} (cosine {cosine:.3f})")
    for problem in report.metadata_problems:
        print(f"  metadata: {problem}")
    return 0


# ---------------------------------------------------------------- search
def _add_search(sub: Any) -> None:
    p = sub.add_parser("search", help="search by text or by image")
    p.add_argument("query", nargs="?", help="text query")
    p.add_argument("--image", type=Path, help="query image (image→image; its own hit is dropped)")
    p.add_argument("--mode", choices=MODES, default="hybrid")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="metadata filter, repeatable (AND)")
    p.add_argument("--weights", help="hybrid RRF weights, e.g. clip=1,caption=1,bm25=0.5")
    p.add_argument("--json", action="store_true", help="print the stable JSON contract")
    p.add_argument("--native-hybrid", action="store_true",
                   help="run hybrid as one Milvus hybrid_search (BM25 function + RRFRanker; equal weights, no per-retriever ranks)")
    _add_common(p)
    p.set_defaults(func=cmd_search)


def parse_filters(items: list[str]) -> dict[str, str]:
    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MmragError(f"bad --filter {item!r}: expected KEY=VALUE")
        filters[key.strip()] = value.strip()
    return filters


def cmd_search(args: argparse.Namespace) -> int:
    from rag.search import SearchEngine

    settings = settings_from_args(args)
    if args.query is None and args.image is None:
        raise MmragError("give a text query or --image PATH")
    filters = parse_filters(args.filter)
    if args.native_hybrid:
        os.environ["MMRAG_NATIVE_HYBRID"] = "1"
    SearchEngine.limit_query_threads()
    with SearchEngine.open(settings, models_from_index=args.clip_model is None and args.text_model is None) as engine:
        response = engine.search(args.query, image=args.image, mode=args.mode, k=args.k, filters=filters)
    if args.json:
        print(json.dumps(response.to_dict(), indent=2))
        return 0
    print(f"{args.mode} search for {args.query or args.image!s}: {len(response.results)} result(s) "
          f"in {response.timings_ms.get('total', 0):.0f} ms")
    for r in response.results:
        ranks = " ".join(f"{name}={r.ranks[name] if r.ranks[name] is not None else '-'}" for name in r.ranks)
        print(f"{r.rank:>3}. {r.score:.4f}  [{ranks}]  {r.path}\n      {r.caption[:110]}")
    return 0


# ---------------------------------------------------------------- inspect / eval / app (their own modules)
def _delegate(sub: Any, name: str, help_text: str, module: str, add: str, run: str) -> None:
    p = sub.add_parser(name, help=help_text)
    try:
        mod = __import__(module, fromlist=[add, run])
        getattr(mod, add)(p)
        runner: Callable[..., int] = getattr(mod, run)
    except ImportError as exc:  # keep the rest of the CLI usable if an optional part cannot import
        message = f"`mmrag {name}` is unavailable: {exc}"

        def runner(args: argparse.Namespace, settings: Settings) -> int:
            raise MmragError(message)
    if not any(a.dest == "data_dir" for a in p._actions):
        _add_common(p)
    p.set_defaults(func=lambda args: runner(args, settings_from_args(args)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmrag", description="Hybrid multimodal retrieval and VLM inspection over Milvus.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_index(sub)
    _add_search(sub)
    _delegate(sub, "inspect", "ask a VLM about defects in images and score it (plus a pixel baseline)",
              "rag.inspection.cli", "add_inspect_arguments", "run_inspect")
    _delegate(sub, "eval", "retrieval eval: gold queries, ablations, plots, report", "eval.cli", "add_eval_arguments", "run_eval")
    _delegate(sub, "app", "start the Streamlit app on 127.0.0.1", "rag.app_launcher", "add_app_arguments", "run_app")
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 600 else text[:600] + "…"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # it logs tracebacks itself; we print one line
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-load "Loading weights" bars; our own progress is tqdm
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MmragError as exc:
        if args.debug:
            raise
        print(f"mmrag: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmrag: interrupted (an index run resumes where it stopped when started again)", file=sys.stderr)
        return 130
    except Exception as exc:  # Milvus/gRPC/HTTP failures surface as one readable line
        if args.debug:
            raise
        print(f"mmrag: error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
