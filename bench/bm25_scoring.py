"""BM25 scoring cost per query: rag/bm25.py (rank-bm25, a Python loop over every document per query term)
against the same scores from a precomputed sparse term-weight matrix (scipy CSC: one column gather + sum).

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
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, load_average, machine, markdown_table, percentile, shared_data  # noqa: E402
from synthetic import real_captions, synthetic_records  # noqa: E402

from rag.bm25 import BM25Index, tokenize  # noqa: E402


class CsrBM25:
    """Okapi BM25 weights of a fitted rank-bm25 model as a (docs x terms) CSC matrix: same scores, no per-doc loop."""

    def __init__(self, model) -> None:
        vocab: dict[str, int] = {}
        rows, cols, tfs = [], [], []
        for d, freqs in enumerate(model.doc_freqs):
            for term, tf in freqs.items():
                rows.append(d)
                cols.append(vocab.setdefault(term, len(vocab)))
                tfs.append(tf)
        tf = np.asarray(tfs, dtype=np.float64)
        doc_len = np.asarray(model.doc_len, dtype=np.float64)[rows]
        idf = np.asarray([model.idf.get(t, 0.0) for t in vocab], dtype=np.float64)[cols]
        weights = idf * tf * (model.k1 + 1) / (tf + model.k1 * (1 - model.b + model.b * doc_len / model.avgdl))
        self.vocab = vocab
        self.matrix = sparse.csc_matrix((weights, (rows, cols)), shape=(len(model.doc_freqs), len(vocab)))

    def get_scores(self, terms: list[str]) -> np.ndarray:
        cols = [self.vocab[t] for t in terms if t in self.vocab]  # repeated query terms count twice, as in rank-bm25
        if not cols:
            return np.zeros(self.matrix.shape[0])
        return np.asarray(self.matrix[:, cols].sum(axis=1)).ravel()


def run(n: int, queries: list[str], captions: list[str]) -> dict:
    texts = [r.caption for r in synthetic_records(n, captions, seed=n)]
    ids = [str(i) for i in range(len(texts))]
    started = time.perf_counter()
    index = BM25Index(ids, texts)
    build_rank_bm25 = time.perf_counter() - started
    started = time.perf_counter()
    csr = CsrBM25(index._bm25)
    build_csr = time.perf_counter() - started
    loop_ms, csr_ms, max_diff = [], [], 0.0
    for q in queries:
        terms = tokenize(q)
        t = time.perf_counter()
        a = index._bm25.get_scores(terms)
        loop_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        b = csr.get_scores(terms)
        csr_ms.append((time.perf_counter() - t) * 1000)
        max_diff = max(max_diff, float(np.max(np.abs(a - b))) if len(a) else 0.0)
    return {"n": len(texts), "build_rank_bm25_s": build_rank_bm25, "build_csr_s": build_csr, "max_abs_score_diff": max_diff,
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
          f"{r['build_rank_bm25_s']:.1f} + {r['build_csr_s']:.1f}"] for r in results])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
