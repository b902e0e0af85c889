"""Recompute the relevance of gold_queries.json from the catalog's COCO instance categories.

A person edits the human part of each query (id, short, descriptive, composite, expr, tags, note); this script
fills `judged` (the judged image pool) and each query's `relevant` files from the metadata, so
relevance never comes from caption text.

    .venv/bin/python scripts/build_gold_queries.py            # rewrite gold_queries.json in place
    .venv/bin/python scripts/build_gold_queries.py --check    # exit 1 if the file is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.gold import GoldError, compute_relevance, judged_pool, parse_expr, read_metadata  # noqa: E402
from rag.config import shared_data_dir  # noqa: E402

RELEVANCE_SOURCE = ("COCO 2017 instance categories (metadata field 'categories' / 'category_counts') of rows with "
                    "source=coco2017 and categories_known=true; Open Images rows (sparse boxes) and COCO rows "
                    "without instance labels are unjudged")
MIN_RELEVANT = 3


def default_catalog() -> Path:
    return shared_data_dir() / "retrieval"


def rebuild(doc: dict, rows: list[dict]) -> tuple[dict, list[str]]:
    """Return the document with judged/relevant recomputed, plus warnings."""
    pool = judged_pool(rows)
    vocabulary = {c for r in pool for c in r.get("categories", [])}
    warnings: list[str] = []
    queries = []
    for q in doc["queries"]:
        human = {k: q[k] for k in ("id", "short", "descriptive", "composite", "expr", "tags", "note") if k in q}
        parse_expr(q["expr"], vocabulary)
        relevant = compute_relevance(q["expr"], pool, vocabulary)
        if not relevant:
            raise GoldError(f"query {q['id']} ({q['expr']!r}) matches no judged image; change its expression")
        if len(relevant) < MIN_RELEVANT:
            warnings.append(f"query {q['id']} ({q['expr']!r}) has only {len(relevant)} relevant image(s)")
        queries.append({**human, "n_relevant": len(relevant), "relevant": relevant})
    head = {k: v for k, v in doc.items() if k not in ("queries", "judged", "relevance_source", "n_judged")}
    out = {**head, "relevance_source": RELEVANCE_SOURCE, "n_judged": len(pool),
           "judged": sorted(r["file"] for r in pool), "queries": queries}
    return out, warnings


def dumps(doc: dict) -> str:
    # One file per line inside lists keeps diffs readable when relevance changes.
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gold", type=Path, default=ROOT / "gold_queries.json")
    ap.add_argument("--catalog", type=Path, default=None, help="catalog folder holding metadata.jsonl")
    ap.add_argument("--check", action="store_true", help="only verify the file is up to date")
    args = ap.parse_args(argv)
    catalog = args.catalog or default_catalog()
    try:
        doc = json.loads(args.gold.read_text(encoding="utf-8"))
        new, warnings = rebuild(doc, read_metadata(catalog / "metadata.jsonl"))
    except (GoldError, OSError, json.JSONDecodeError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    text = dumps(new)
    if args.check:
        same = args.gold.read_text(encoding="utf-8") == text
        print("gold_queries.json is up to date" if same else "gold_queries.json is out of date: rerun without --check")
        return 0 if same else 1
    args.gold.write_text(text, encoding="utf-8")
    sizes = sorted(q["n_relevant"] for q in new["queries"])
    print(f"wrote {args.gold}: {len(new['queries'])} queries over {new['n_judged']} judged images; "
          f"relevant per query min {sizes[0]}, median {sizes[len(sizes) // 2]}, max {sizes[-1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
