"""BM25 scoring cost per query: rank-bm25's get_scores (a Python loop over every document per query term)
against rag/bm25.py's BM25Index.scores (a precomputed sparse term-weight matrix: one column gather + sum).

Checks that both give identical scores, then prints p50/p99 ms per query at each catalog size.

    .venv/bin/python bench/bm25_scoring.py [--sizes 567,10000,100000] [--queries 100] [--out bench/results/bm25_scoring.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, load_average, machine, markdown_table, percentile, shared_data  # noqa: E402
from synthetic import real_captions, synthetic_records  # noqa: E402

from rank_bm25 import BM25Okapi  # noqa: E402

from rag.bm25 import BM25Index, lucene_idf, tokenize  # noqa: E402


def run(n: int, queries: list[str], captions: list[str]) -> dict:
    texts = [r.caption for r in synthetic_records(n, captions, seed=n)]
    ids = [str(i) for i in range(len(texts))]
    started = time.perf_counter()
    index = BM25Index(ids, texts)  # fits rank-bm25, then precomputes the sparse weight matrix rag/bm25.py scores with
    build_s = time.perf_counter() - started
    oracle = BM25Okapi([tokenize(t) for t in texts])  # rank-bm25 itself, given Lucene's IDF as BM25Index uses
    doc_freq = {}
    for freqs in oracle.doc_freqs:
        for term in freqs:
            doc_freq[term] = doc_freq.get(term, 0) + 1
    oracle.idf = dict(zip(doc_freq, lucene_idf(oracle.corpus_size, np.asarray(list(doc_freq.values()), dtype=float))))
    loop_ms, csr_ms, max_diff = [], [], 0.0
    for q in queries:
        terms = tokenize(q)
        t = time.perf_counter()
        a = oracle.get_scores(terms)
        loop_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        b = index.scores(terms)
        csr_ms.append((time.perf_counter() - t) * 1000)
        max_diff = max(max_diff, float(np.max(np.abs(a - b))) if len(a) else 0.0)
    return {"n": len(texts), "build_s": build_s, "max_abs_score_diff": max_diff,
            "rank_bm25": {"p50": percentile(loop_ms, 50), "p99": percentile(loop_ms, 99)},
            "csr": {"p50": percentile(csr_ms, 50), "p99": percentile(csr_ms, 99)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="567,10000,100000")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    gold = json.loads((REPO / "gold_queries.json").read_text())["queries"]
    queries = ([q["short"] for q in gold] + [q["descriptive"] for q in gold])[: args.queries]
    captions = real_captions(shared_data() / "retrieval" / "metadata.jsonl")
    results = [run(int(n), queries, captions) for n in args.sizes.split(",")]
    text = f"Machine: {machine()}; {load_average()} at the end.\n\n" + markdown_table(
        ["captions", "rank-bm25 p50 ms", "p99 ms", "sparse matrix p50 ms", "p99 ms", "speed-up (p50)", "max abs score diff", "build s (rank-bm25 + matrix)"],
        [[f"{r['n']:,}", r["rank_bm25"]["p50"], r["rank_bm25"]["p99"], r["csr"]["p50"], r["csr"]["p99"],
          f"{r['rank_bm25']['p50'] / r['csr']['p50']:.0f}x", f"{r['max_abs_score_diff']:.1e}",
          f"{r['build_s']:.1f}"] for r in results])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
