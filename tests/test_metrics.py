"""Metric functions against hand-worked examples."""

import math

import pytest

from eval.metrics import (
    bootstrap_ci,
    condense,
    latency_summary,
    mean_metrics,
    ndcg_at_k,
    paired_sign_flip_p,
    precision_at_k,
    query_metrics,
    recall_at_k,
    reciprocal_rank,
)

RANKED = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
RELEVANT = {"b", "e", "x"}  # x is never retrieved


def test_precision_recall_by_hand():
    assert precision_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 5)
    assert precision_at_k(RANKED, RELEVANT, 1) == 0.0
    assert recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, RELEVANT, 10) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, RELEVANT, 2) == pytest.approx(1 / 3)
    # a short list counts empty slots as misses for precision
    assert precision_at_k(["b"], RELEVANT, 5) == pytest.approx(1 / 5)


def test_reciprocal_rank_by_hand():
    assert reciprocal_rank(RANKED, RELEVANT) == pytest.approx(1 / 2)
    assert reciprocal_rank(["e", "b"], RELEVANT) == 1.0
    assert reciprocal_rank(["q", "r"], RELEVANT) == 0.0


def test_ndcg_by_hand():
    # hits at ranks 2 and 5; ideal has 3 hits at ranks 1..3
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(RANKED, RELEVANT, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(RANKED, RELEVANT, 10) == pytest.approx(0.477624, abs=1e-6)
    assert ndcg_at_k(["b", "e", "x"], RELEVANT, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["q"], RELEVANT, 10) == 0.0
    # the ideal is capped at k hits: 12 relevant, all top-10 hits -> 1.0
    many = {str(i) for i in range(12)}
    assert ndcg_at_k([str(i) for i in range(10)], many, 10) == pytest.approx(1.0)


def test_undefined_cases_raise():
    with pytest.raises(ValueError):
        recall_at_k(RANKED, set(), 5)
    with pytest.raises(ValueError):
        ndcg_at_k(RANKED, set(), 10)
    with pytest.raises(ValueError):
        precision_at_k(RANKED, RELEVANT, 0)


def test_condense_drops_unjudged_and_duplicates():
    judged = {"a", "b", "e", "j"}
    assert condense(["u", "b", "v", "b", "e", "a"], judged) == ["b", "e", "a"]
    # condensing moves a relevant item up past unjudged ones
    relevant = {"e"}
    raw = ["u1", "u2", "u3", "u4", "u5", "e"]
    assert precision_at_k(raw, relevant, 5) == 0.0
    assert precision_at_k(condense(raw, {"e"}), relevant, 5) == pytest.approx(1 / 5)


def test_query_metrics_and_mean():
    m = query_metrics(RANKED, RELEVANT)
    assert set(m) == {"p@5", "r@5", "r@10", "mrr", "ndcg@10"}
    assert m["mrr"] == pytest.approx(0.5)
    other = query_metrics(["x", "b", "e"], RELEVANT)
    assert other["r@5"] == 1.0 and other["mrr"] == 1.0
    avg = mean_metrics([m, other])
    assert avg["mrr"] == pytest.approx(0.75)
    assert avg["r@5"] == pytest.approx((2 / 3 + 1) / 2)
    assert mean_metrics([]) == {}


def test_latency_percentiles():
    s = latency_summary([10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    assert s["p50_ms"] == pytest.approx(55.0)
    assert s["p95_ms"] == pytest.approx(95.5)
    assert s["n"] == 10
    assert math.isnan(latency_summary([])["p50_ms"])


def test_bootstrap_and_paired_test():
    lo, hi = bootstrap_ci([0.0, 1.0] * 20)
    assert 0.3 < lo < 0.5 < hi < 0.7
    assert bootstrap_ci([0.4] * 5) == pytest.approx((0.4, 0.4))
    assert paired_sign_flip_p([1.0] * 30, [0.0] * 30) < 0.001
    assert paired_sign_flip_p([0.5, 0.2], [0.5, 0.2]) == 1.0
    assert paired_sign_flip_p([1, 0, 1, 0], [0, 1, 0, 1]) > 0.5
