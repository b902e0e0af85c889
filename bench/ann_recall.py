"""Recall@10 of Milvus' HNSW index against exact search, and what each ef costs, at 100k vectors.

Writes n CLIP-sized (512-d) unit vectors into one Milvus Lite collection with two vector fields holding the
same vectors, one FLAT (exact) and one HNSW with rag.index_params' defaults (M=16, efConstruction=200),
then for each search-time ef reports recall@10 against numpy's exact top-10 and single-query latency.
Two data sets: clustered (embedding-like) and i.i.d. Gaussian (the hardest case for any ANN index).

    .venv/bin/python bench/ann_recall.py [--n 100000] [--queries 200] [--data clustered,uniform] [--out bench/results/ann_recall.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine, markdown_table, percentile  # noqa: E402
from synthetic import clustered_vectors, uniform_vectors  # noqa: E402

from rag.index_params import index_params_for  # noqa: E402


def build(client, name: str, vectors: np.ndarray, hnsw_config: dict, batch: int = 5000) -> dict[str, float]:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("flat", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
    schema.add_field("hnsw", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
    client.create_collection(name, schema=schema)
    started = time.perf_counter()
    for start in tqdm(range(0, len(vectors), batch), desc=f"insert {name}", disable=None):
        chunk = vectors[start : start + batch]
        client.insert(name, [{"id": start + i, "flat": v, "hnsw": v} for i, v in enumerate(chunk.tolist())])
    client.flush(name)
    insert_s = time.perf_counter() - started
    # Index after the flush: Milvus Lite then builds every sealed segment's index synchronously (timed here),
    # instead of in a background thread while unindexed segments are searched exactly.
    started = time.perf_counter()
    params = client.prepare_index_params()
    params.add_index(field_name="flat", index_type="FLAT", metric_type="COSINE")
    cfg = {k: v for k, v in hnsw_config.items() if k not in ("index_type", "metric_type")}
    params.add_index(field_name="hnsw", index_type=hnsw_config["index_type"], metric_type=hnsw_config["metric_type"], params=cfg)
    client.create_index(name, params)
    return {"insert_s": insert_s, "index_build_s": time.perf_counter() - started}


def search_ids(client, name: str, field: str, queries: np.ndarray, k: int, params: dict) -> tuple[list[list[int]], list[float]]:
    ids, latencies = [], []
    for q in queries.tolist():
        started = time.perf_counter()
        hits = client.search(name, data=[q], anns_field=field, limit=k, search_params=params, output_fields=["id"])
        latencies.append((time.perf_counter() - started) * 1000)
        ids.append([h["id"] for h in hits[0]])
    return ids, latencies


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def run(kind: str, n: int, n_queries: int, efs: list[int], k: int, workdir: Path) -> dict:
    from pymilvus import MilvusClient

    dim = 512
    make = clustered_vectors if kind == "clustered" else uniform_vectors
    data = make(n + n_queries, dim, seed=11)
    vectors, queries = data[:n], data[n:]
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]  # exact cosine top-k (unit vectors)
    hnsw_config, search_config = index_params_for(max(n, 100_000), overrides={"index_type": "HNSW"})
    client = MilvusClient(str(workdir / f"{kind}.db"))
    timings = build(client, kind, vectors, hnsw_config)
    flat_ids, flat_ms = search_ids(client, kind, "flat", queries, k, {})
    rows = [{"index": "FLAT (exact)", "ef": None, "recall": recall(flat_ids, truth),
             "p50_ms": percentile(flat_ms, 50), "p99_ms": percentile(flat_ms, 99)}]
    for ef in efs:
        ids, ms = search_ids(client, kind, "hnsw", queries, k, {"ef": max(ef, k)})
        rows.append({"index": f"HNSW M={hnsw_config.get('M')} efC={hnsw_config.get('efConstruction')}", "ef": ef,
                     "recall": recall(ids, truth), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
                     "default": ef == search_config.get("ef")})
    stats = client.describe_index(kind, "hnsw")
    client.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(workdir / f"{kind}.db"))
    return {"kind": kind, "n": n, "dim": dim, "queries": n_queries, "k": k, **timings, "rows": rows,
            "index_state": stats.get("state")}


def render(results: list[dict]) -> str:
    parts = []
    for res in results:
        parts.append(f"**{res['kind']}** vectors: n={res['n']:,}, {res['dim']}-d, {res['queries']} queries, recall@{res['k']} "
                     f"vs numpy exact; insert {res['insert_s']:.0f} s, HNSW build {res['index_build_s']:.0f} s")
        parts.append("")
        parts.append(markdown_table(
            ["index", "ef", "recall@10", "p50 ms", "p99 ms"],
            [[r["index"], (f"{r['ef']} (default)" if r.get("default") else r["ef"]) if r["ef"] else "-",
              f"{r['recall']:.3f}", r["p50_ms"], r["p99_ms"]] for r in res["rows"]],
        ))
        parts.append("")
    return "\n".join(parts)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for res in results:
        hnsw = [r for r in res["rows"] if r["ef"]]
        ax.plot([r["p50_ms"] for r in hnsw], [r["recall"] for r in hnsw], "o-", label=f"HNSW, {res['kind']}")
        if res["kind"] != "clustered":  # clustered points sit on top of each other at recall 1.0
            for r in hnsw:
                ax.annotate(f"ef={r['ef']}", (r["p50_ms"], r["recall"]), fontsize=7, xytext=(3, -9), textcoords="offset points")
        flat = res["rows"][0]
        ax.plot([flat["p50_ms"]], [flat["recall"]], "s", label=f"FLAT, {res['kind']}")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per query, ms, log scale (Milvus Lite, 2-core dev box)")
    ax.set_ylabel("recall@10 vs exact")
    ax.set_title(f"HNSW recall vs latency at {results[0]['n']:,} x 512-d")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--data", default="clustered,uniform")
    parser.add_argument("--efs", default="16,32,64,128,256")
    parser.add_argument("--out", type=Path, default=None, help="write markdown (+ .json, .png) here")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ann_recall_"))
    try:
        results = [run(kind, args.n, args.queries, [int(e) for e in args.efs.split(",")], 10, workdir)
                   for kind in args.data.split(",")]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = f"Machine: {machine()}; {load_average()} at the end.\n\n" + render(results)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
        plot(results, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
