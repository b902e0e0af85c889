"""Check that eval/absent_queries.json only asks for things the sample catalog does not hold.

    python scripts/check_absent_queries.py [--catalog ../shared/data/retrieval] [--absent eval/absent_queries.json]

Exit 0 when no query term occurs in any caption, COCO category or Open Images label; else lists the hits, exit 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.absent import DEFAULT_ABSENT, load_absent, term_hits  # noqa: E402
from eval.gold import read_metadata  # noqa: E402
from rag.config import shared_data_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=shared_data_dir() / "retrieval")
    parser.add_argument("--absent", type=Path, default=DEFAULT_ABSENT)
    args = parser.parse_args(argv)
    rows = read_metadata(args.catalog / "metadata.jsonl")
    queries = load_absent(args.absent)
    hits = term_hits(queries, rows)
    bad = {qid: h for qid, h in hits.items() if h}
    for qid, found in bad.items():
        for term, file, text in found[:5]:
            print(f"{qid}: term {term!r} occurs in {file}: {text[:100]!r}")
    print(f"{len(queries) - len(bad)}/{len(queries)} absent queries hold no term found in the {len(rows)} catalog rows")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
