"""Ranking metrics over one query's ranked list (pure functions, binary relevance).

`ranked` is the retrieved item ids best first; `relevant` the set of relevant ids. Items that were
never judged should be removed first with `condense` (the standard treatment of incomplete
judgements: score the ranking restricted to judged items).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def condense(ranked: Sequence[str], judged: set[str] | frozenset[str]) -> list[str]:
    """Keep only judged items, in order (drops duplicates too)."""
    seen: set[str] = set()
    out = []
    for item in ranked:
        if item in judged and item not in seen:
            seen.add(item)
            out.append(item)
    return out


def precision_at_k(ranked: Sequence[str], relevant: set[str] | frozenset[str], k: int) -> float:
    """Relevant items among the top k, divided by k (a short list counts its missing slots as misses)."""
    if k <= 0:
        raise ValueError("k must be positive")
    return sum(1 for item in ranked[:k] if item in relevant) / k


def recall_at_k(ranked: Sequence[str], relevant: set[str] | frozenset[str], k: int) -> float:
    """Share of the relevant items found in the top k."""
    if k <= 0:
        raise ValueError("k must be positive")
    if not relevant:
        raise ValueError("recall is undefined without relevant items")
    return len(set(ranked[:k]) & set(relevant)) / len(relevant)


def reciprocal_rank(ranked: Sequence[str], relevant: set[str] | frozenset[str]) -> float:
    """1 / rank of the first relevant item; 0 when none is retrieved."""
    for i, item in enumerate(ranked, 1):
        if item in relevant:
            return 1.0 / i
    return 0.0


def dcg_at_k(gains: Sequence[float], k: int) -> float:
    return float(sum(g / math.log2(i + 1) for i, g in enumerate(gains[:k], 1)))


def ndcg_at_k(ranked: Sequence[str], relevant: set[str] | frozenset[str], k: int) -> float:
    """Binary-gain nDCG@k: DCG of the ranking over DCG of an ideal ranking of min(k, |relevant|) hits."""
    if k <= 0:
        raise ValueError("k must be positive")
    if not relevant:
        raise ValueError("nDCG is undefined without relevant items")
    gains = [1.0 if item in relevant else 0.0 for item in ranked[:k]]
    ideal = dcg_at_k([1.0] * min(k, len(relevant)), k)
    return dcg_at_k(gains, k) / ideal


METRICS = ("p@5", "r@5", "r@10", "mrr", "ndcg@10")


def query_metrics(ranked: Sequence[str], relevant: set[str] | frozenset[str]) -> dict[str, float]:
    """All headline metrics of one query (ranked must already be condensed to judged items)."""
    return {
        "p@5": precision_at_k(ranked, relevant, 5),
        "r@5": recall_at_k(ranked, relevant, 5),
        "r@10": recall_at_k(ranked, relevant, 10),
        "mrr": reciprocal_rank(ranked, relevant),
        "ndcg@10": ndcg_at_k(ranked, relevant, 10),
    }


def mean_metrics(per_query: Iterable[dict[str, float]]) -> dict[str, float]:
    """Macro average of each metric over queries."""
    rows = list(per_query)
    if not rows:
        return {}
    return {m: float(np.mean([r[m] for r in rows])) for m in rows[0]}


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile (0-100), linear interpolation; NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "n": float(len(ms))}


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over queries (how much a table row could move)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_boot, arr.size))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def paired_sign_flip_p(a: Sequence[float], b: Sequence[float], *, n_perm: int = 5000, seed: int = 0) -> float:
    """Two-sided paired randomization test p-value for mean(a) - mean(b) over the same queries."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0 or not np.any(d):
        return 1.0
    rng = np.random.default_rng(seed)
    observed = abs(d.mean())
    signs = rng.choice([-1.0, 1.0], size=(n_perm, d.size))
    return float((np.abs((signs * d).mean(axis=1)) >= observed - 1e-12).mean())
