"""`mmrag index|search|ask|inspect|eval|app`: the command line and composition root.

It parses flags, builds Settings, wires rag/ (library), ingest/ and eval/ together and prints.
Errors are one line on stderr, never a traceback (--debug shows it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

from rag.config import FUSIONS, Settings, parse_weights
from rag.errors import MmragError

EXIT_STRICT = 3  # --strict and something was skipped or left pending


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
    settings = settings.with_(data_dir=args.data_dir, uri=args.uri, collection_prefix=args.collection_prefix,
                              text_model=args.text_model, batch_size=getattr(args, "batch_size", None))
    clip = getattr(args, "clip_model", None)
    if clip is not None:
        settings = replace(settings, clip_model=None if clip.lower() == "none" else clip)
    if getattr(args, "weights", None):
        settings = replace(settings, fusion_weights={**settings.fusion_weights, **parse_weights(args.weights)})
    fusion = "native" if getattr(args, "native_hybrid", False) else getattr(args, "fusion", None)
    if fusion:
        settings = replace(settings, fusion=fusion)
    return settings


# ---------------------------------------------------------------- index
def _add_index(sub: Any) -> None:
    p = sub.add_parser("index", help="index a folder (or one image) into the Milvus catalog")
    p.add_argument("path", type=Path, help="folder of images, searched recursively")
    p.add_argument("--metadata", type=Path, help="catalog sidecar (JSONL or CSV: file + title/alt_text/captions/tags/...)")
    p.add_argument("--captioner", default="", help="extra caption sources, comma-separated: vlm (OpenAI-compatible endpoint), ocr (rapidocr)")
    p.add_argument("--clip-optional", action="store_true", help="if the CLIP model cannot be loaded, say so and index caption-side only")
    p.add_argument("--batch-size", type=int, help="images per embedding batch (default 32)")
    p.add_argument("--near-dup", type=float, default=0.95, help="report image pairs above this CLIP cosine (default 0.95)")
    p.add_argument("--strict", action="store_true",
                   help=f"exit {EXIT_STRICT} if any file was skipped or any VLM caption is left pending")
    p.add_argument("--json", action="store_true", help="print the run report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_common(p)
    p.set_defaults(func=cmd_index)


def cmd_index(args: argparse.Namespace) -> int:
    from ingest.pipeline import index_folder
    from rag.clip_embedding import load_clip
    from rag.errors import ModelUnavailableError

    settings = settings_from_args(args)
    sources = {s.strip() for s in args.captioner.split(",") if s.strip()}
    unknown = sources - {"vlm", "ocr"}
    if unknown:
        raise MmragError(f"unknown --captioner {', '.join(sorted(unknown))}: choose from vlm, ocr")
    if args.batch_size is not None and args.batch_size < 1:
        raise MmragError("--batch-size must be at least 1")
    clip = None
    if settings.clip_model:
        try:
            clip = load_clip(settings.clip_model, batch_size=settings.batch_size, dtype=settings.clip_dtype)
        except ModelUnavailableError as exc:
            if not args.clip_optional:
                raise
            print(f"mmrag: no CLIP weights ({settings.clip_model}): indexing caption-side only. {exc}", file=sys.stderr)
            settings = replace(settings, clip_model=None)
    report = index_folder(args.path, settings, metadata=args.metadata, ocr="ocr" in sources, vlm_captions="vlm" in sources,
                          show_progress=not args.quiet, clip=clip, near_duplicate_cosine=args.near_dup)
    strict_failed = args.strict and bool(report.bad_files or report.pending)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return EXIT_STRICT if strict_failed else 0
    side = f"CLIP {report.clip_model} + captions" if report.clip_model else "caption-side only (no CLIP)"
    print(f"indexed {report.indexed} new image(s), {report.already_indexed} already indexed, in {report.seconds:.1f} s; "
          f"store {settings.store_uri} holds {report.total_in_store}; {side}, text model {report.text_model}; "
          f"channels {', '.join(report.channels)}")
    if report.recaptioned:
        print(f"  {report.recaptioned} pending VLM caption(s) filled in")
    for path, reason in report.bad_files:
        print(f"  skipped {path}: {reason}")
    for path, reason in report.pending:
        print(f"  indexed, caption pending {path}: {reason} (the next `mmrag index --captioner vlm` retries it)")
    for path, message in report.warnings:
        print(f"  warning {path}: {message}")
    for path, original in report.duplicates:
        print(f"  duplicate {path} = {original} (indexed once)")
    for a, b, cosine in report.near_duplicates:
        print(f"  near-duplicate {a[:12]} ~ {b[:12]} (cosine {cosine:.3f})")
    for problem in report.metadata_problems:
        print(f"  metadata: {problem}")
    return EXIT_STRICT if strict_failed else 0


# ---------------------------------------------------------------- search
def _add_search(sub: Any) -> None:
    p = sub.add_parser("search", help="search by text or by image (or many queries from a JSONL file)")
    p.add_argument("query", nargs="?", help='text query; composite syntax "2:dog + beach - people" (terms joined by '
                   'a spaced + or -, optional N: weight, quotes for literal text); "no X", "without X", "nobody" '
                   'exclude X automatically')
    p.add_argument("--image", type=Path, help="query image (image→image; its own hit is dropped)")
    p.add_argument("--plus", action="append", default=[], metavar="TEXT", help="add a positive part (repeatable; N:TEXT weights it)")
    p.add_argument("--minus", action="append", default=[], metavar="TEXT", help="add a negative part: results should not show it (repeatable)")
    p.add_argument("--literal", action="store_true", help="send the query text unchanged: no composite syntax, no automatic negation")
    p.add_argument("--queries", type=Path, metavar="FILE.jsonl",
                   help='one query per line: {"query": ...} or {"image": ...}, optional "filters", "k", "mode"; '
                        "prints one JSON object per line")
    p.add_argument("--mode", default="hybrid", help="hybrid (default) or one channel: clip, caption, bm25, ocr")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="metadata filter, repeatable (AND)")
    p.add_argument("--weights", help="hybrid RRF weights per channel, e.g. clip=1,caption=1,bm25=0.5")
    p.add_argument("--fusion", choices=FUSIONS, help="client: LlamaIndex weighted RRF (default); native: one Milvus "
                   "hybrid_search with RRFRanker (equal weights, no per-channel ranks)")
    p.add_argument("--native-hybrid", action="store_true", help="same as --fusion native")
    p.add_argument("--json", action="store_true", help="print the stable JSON contract")
    _add_common(p)
    p.set_defaults(func=cmd_search)


def parse_filters(items: list[str]) -> dict[str, str]:
    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MmragError(f"bad --filter {item!r}: expected KEY=VALUE")
        filters[key.strip()] = value  # the value as given: spaces may be part of it
    return filters


def _query_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, query object) or (line number, error text) per non-empty line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MmragError(f"cannot read --queries {path}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"invalid JSON: {exc.msg}"
            continue
        if not isinstance(obj, dict) or not (obj.get("query") or obj.get("image")):
            yield number, 'expected an object with "query" or "image"'
            continue
        yield number, obj


def cmd_search(args: argparse.Namespace) -> int:
    from rag.search import SearchEngine, limit_query_threads

    settings = settings_from_args(args)
    if args.query is None and args.image is None and args.queries is None and not args.plus:
        raise MmragError("give a text query, --image PATH, --plus TEXT, or --queries FILE.jsonl")
    filters = parse_filters(args.filter)
    parts = option_parts(args.plus, args.minus)
    if args.query and not args.literal:
        from rag.query_parser import parse_query

        parse_query(args.query)  # a malformed query fails before the store and models open
    with SearchEngine.open(settings, models_from_index=args.clip_model is None and args.text_model is None) as engine:
        limit_query_threads(settings.query_threads)
        if args.queries is not None:
            return _batch_search(engine, args, filters)
        response = engine.search(args.query, image=args.image, mode=args.mode, k=args.k, filters=filters, parts=parts,
                                 literal=args.literal)
    if args.json:
        print(json.dumps(response.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(f"{args.mode} search for {args.query or args.image or ' '.join(args.plus)!s}: {len(response.results)} result(s) "
          f"in {response.timings_ms.get('total', 0):.0f} ms")
    if len(response.parts) > 1 or response.negations:
        print(parts_line(response))
    print_results(response, str(args.query or args.image or " ".join(args.plus)))
    return 0


def match_line(response: Any, label: str) -> str | None:
    """The one line that says a query found nothing good (rag/match.py); None when the match is good or unknown."""
    if response.match == "none":
        return f"no good match for {label!r}: the nearest results are shown below"
    if response.match == "weak":
        return f"only weak matches for {label!r}: check the results below"
    return None


def print_results(response: Any, label: str) -> None:
    line = match_line(response, label)
    if line:
        print(line)
    for r in response.results:
        ranks = " ".join(f"{name}={rank if rank is not None else '-'}" for name, rank in r.ranks.items())
        match = f"  ({r.match})" if r.match else ""
        matched = f"  matched: {', '.join(r.matched_terms)}" if r.matched_terms else ""
        print(f"{r.rank:>3}. {r.score:.4f}  [{ranks}]{match}{matched}  {r.path}\n      {r.caption[:110]}")


def option_parts(plus: list[str], minus: list[str]) -> list[Any]:
    """--plus / --minus values as query parts ('2:beach' weighs a part)."""
    from dataclasses import replace as with_weight

    from rag.query_parser import parse_chip

    parts = [parse_chip(text) for text in plus]
    for text in minus:
        part = parse_chip(text)
        parts.append(with_weight(part, weight=-abs(part.weight)))
    if any(p.negative for p in parts[: len(plus)]):
        raise MmragError("--plus takes a positive part; use --minus TEXT to exclude")
    return parts


def parts_line(response: Any) -> str:
    from rag.query_parser import format_part

    line = "  parts: " + "  ".join(format_part(p) for p in response.parts)
    if response.negations:
        line += "  (negation found: " + ", ".join(f"{n.cue} {n.text}" for n in response.negations) + ")"
    return line


def _batch_search(engine: Any, args: argparse.Namespace, filters: dict[str, str]) -> int:
    """One JSON object per query line; a bad line prints {"line", "error"} and the run goes on (exit 2 at the end)."""
    failed = 0
    for number, item in _query_lines(args.queries):
        if isinstance(item, str):
            failed += 1
            print(json.dumps({"line": number, "error": item}), flush=True)
            continue
        try:
            response = engine.search(item.get("query"), image=item.get("image"), mode=item.get("mode", args.mode),
                                     k=int(item.get("k", args.k)), filters={**filters, **(item.get("filters") or {})},
                                     weights=parse_weights(item["weights"]) if item.get("weights") else None,
                                     literal=bool(item.get("literal", False)))
        except (MmragError, ValueError, TypeError) as exc:
            failed += 1
            print(json.dumps({"line": number, "error": _one_line(exc)}), flush=True)
            continue
        print(json.dumps({"line": number, **response.to_dict()}, ensure_ascii=False), flush=True)
    return 2 if failed else 0


# ---------------------------------------------------------------- ask
CONVERSATION_FILE = "ask_conversation.json"  # under the data dir: the last answered conversation (--follow-up)


def _add_ask(sub: Any) -> None:
    p = sub.add_parser("ask", help="answer a question from the top search results with the configured VLM, citing them")
    p.add_argument("question", help='e.g. "which photos show a dog on a beach, and what are the dogs doing?"')
    p.add_argument("--follow-up", action="store_true",
                   help="refine the previous answered `mmrag ask` (same --data-dir): search with its search text plus "
                        "this question, and send the earlier questions and answers as chat history")
    p.add_argument("--images", type=int, help="top results sent to the model as images (default 5, env MMRAG_ASK_IMAGES)")
    p.add_argument("-k", type=int, default=10, help="results retrieved and listed (default 10)")
    p.add_argument("--mode", default="hybrid", help="hybrid (default) or one channel: clip, caption, bm25, ocr")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="metadata filter, repeatable (AND)")
    p.add_argument("--json", action="store_true", help="print the turn as JSON (no streaming)")
    _add_common(p)
    p.set_defaults(func=cmd_ask)


def cmd_ask(args: argparse.Namespace) -> int:
    from rag.ask import Asker, Conversation
    from rag.errors import VLMUnavailableError
    from rag.search import SearchEngine, limit_query_threads
    from rag.vision_llm import VisionChatLLM

    settings = settings_from_args(args)
    if args.images is not None:
        settings = replace(settings, ask_images=args.images)
    saved = settings.data_dir / CONVERSATION_FILE
    conversation = Conversation()
    if args.follow_up:
        if not saved.is_file():
            raise MmragError("no earlier answered question to follow up (none saved in the data dir): ask one first")
        try:
            conversation = Conversation.from_dict(json.loads(saved.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise MmragError(f"cannot read the saved conversation {saved}: {exc}") from None
    llm = VisionChatLLM.from_settings(settings) if settings.vlm_base_url and settings.vlm_model else None
    with SearchEngine.open(settings, models_from_index=args.clip_model is None and args.text_model is None) as engine:
        limit_query_threads(settings.query_threads)
        asker = Asker(engine, llm, settings.ask_images)
        turn = asker.search(args.question, conversation, follow_up=args.follow_up, mode=args.mode, k=args.k,
                            filters=parse_filters(args.filter))
        if args.json:
            failed = False
            try:
                for _ in asker.stream(turn, conversation):
                    pass
            except VLMUnavailableError:
                failed = True
            print(json.dumps({**turn.to_dict(), "model": settings.vlm_model if llm else None}, indent=2, ensure_ascii=False))
        else:
            failed = _print_ask(asker, turn, conversation, llm)
    if turn.answered:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(conversation.to_dict(), ensure_ascii=False), encoding="utf-8")
    return 2 if failed else 0


def _print_ask(asker: Any, turn: Any, conversation: Any, llm: Any) -> bool:
    """Results, then the streamed answer and its citations; True when the endpoint failed (its line on stderr)."""
    from rag.ask import NO_ENDPOINT
    from rag.errors import VLMUnavailableError

    response = turn.response
    print(f"{response.mode} search for {turn.search_text!r}: {len(response.results)} result(s), "
          f"{len(turn.sent)} sent as images" + (f" to {llm.model}" if llm else ""))
    line = match_line(response, turn.search_text)
    if line:
        print(line)
    for s in turn.sources:
        print(f"[{s.number}]{'' if s.sent else ' (not sent)'} {s.path}\n      {s.caption[:110]}")
    if llm is None:
        print(NO_ENDPOINT)
        return False
    print("answer:")
    try:
        for delta in asker.stream(turn, conversation):
            print(delta, end="", flush=True)
    except VLMUnavailableError as exc:
        print()
        print(f"mmrag: error: no answer: {_one_line(exc)}", file=sys.stderr)
        return True
    print()
    by_number = {s.number: s for s in turn.sources}
    for c in turn.citations:
        if c.sent:
            print(f"  cited [{c.number}] {by_number[c.number].path}")
        else:
            print(f"  warning: {c.problem}")
    if turn.error:
        print(turn.error)
    return False


# ---------------------------------------------------------------- inspect / eval / app (their own modules)
def _delegate(sub: Any, name: str, help_text: str, module: str, add: str, run: str, load: bool) -> None:
    """A subcommand that lives in its own module, imported only when that subcommand runs (imports cost CPU)."""
    p = sub.add_parser(name, help=help_text)
    runner: Callable[..., int]
    try:
        if not load:
            raise LookupError  # another subcommand runs: skip this module's import
        mod = __import__(module, fromlist=[add, run])
        getattr(mod, add)(p)
        runner = getattr(mod, run)
    except LookupError:
        runner = _unloaded
    except ImportError as exc:  # keep the rest of the CLI usable if an optional part cannot import
        message = f"`mmrag {name}` is unavailable: {exc}"

        def runner(args: argparse.Namespace, settings: Settings) -> int:
            raise MmragError(message)
    if not any(a.dest == "data_dir" for a in p._actions):
        _add_common(p)
    p.set_defaults(func=lambda args: runner(args, settings_from_args(args)))


def _unloaded(args: argparse.Namespace, settings: Settings) -> int:
    raise MmragError("internal: subcommand module not loaded")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """All subcommands; the modules of inspect/eval/app are imported only for the one named in argv."""
    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="mmrag", description="Hybrid multimodal retrieval and VLM inspection over Milvus.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_index(sub)
    _add_search(sub)
    _add_ask(sub)
    _delegate(sub, "inspect", "ask a VLM about defects in images and score it (plus a pixel baseline)",
              "rag.inspection.cli", "add_inspect_arguments", "run_inspect", command == "inspect")
    _delegate(sub, "eval", "retrieval eval: gold queries, ablations, plots, report", "eval.cli", "add_eval_arguments",
              "run_eval", command == "eval")
    _delegate(sub, "app", "start the Streamlit app on 127.0.0.1", "mmrag.app_launcher", "add_app_arguments", "run_app",
              command == "app")
    return parser


def _quiet_milvus_loggers() -> None:
    """pymilvus and Milvus Lite log their own tracebacks (a dead server, a held folder); we print one line instead.

    pymilvus configures its loggers when imported, so it is imported first and its loggers are set after.
    """
    import pymilvus  # noqa: F401

    for name in list(logging.root.manager.loggerDict) + ["pymilvus", "milvus_lite"]:
        if name.split(".")[0] in ("pymilvus", "milvus_lite"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 600 else text[:600] + "…"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # for the tokenizers library, before it loads
    # gRPC's C core prints keepalive notes ("too_many_pings") from Milvus Lite during long OCR/VLM runs; real
    # failures still surface as exceptions and one line.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    args = build_parser(argv).parse_args(argv)
    if not args.debug:
        _quiet_milvus_loggers()
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
    except Exception as exc:  # anything unforeseen still ends in one readable line
        if args.debug:
            raise
        print(f"mmrag: error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
