"""Query latency p50/p99 per search mode at the sample catalog, 10k and 100k images; embedded vs server.

Stores: "sample" is the real 567-photo catalog indexed by the real pipeline (ingest.pipeline.index_folder,
random-weight ViT-B/32 + offline MiniLM); "10k"/"100k" are synthetic (rag-shaped rows written through
rag.store.CatalogStore: clustered unit vectors, captions recombined from the real ones), mirrored into the
native hybrid collection. Queries always run the real text pipeline: MiniLM and the CLIP text tower embed
the gold queries (gold_queries.json), BM25 scores the captions, RRF fuses (rag.search.SearchEngine).
Embedded = Milvus Lite in-process (a .db folder); server = `milvus-lite server` on 127.0.0.1 (gRPC).
Random weights give real FLOPs, not quality: only times are reported.

    .venv/bin/python bench/query_latency.py [--sizes sample,10000,100000] [--stores embedded,server] [--queries 100]
                                            [--out bench/results/query_latency.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, REPO, load_average, machine, markdown_table, percentile, random_clip_dir, shared_data  # noqa: E402
from synthetic import clustered_vectors, real_captions, synthetic_records  # noqa: E402

from rag.config import Settings  # noqa: E402

STORES = CACHE / "stores"
BLAS_THREADS: int | None = 1


def gold_queries(n: int) -> list[str]:
    queries = json.loads((REPO / "gold_queries.json").read_text())["queries"]
    texts = [q["short"] for q in queries] + [q["descriptive"] for q in queries]
    return texts[:n]


def build_sample(root: Path, clip, text) -> Settings:
    from ingest.pipeline import index_folder

    settings = Settings(data_dir=root, clip_model="random-clip-vit-b32", text_model=text.model_name)
    if not (root / "built").exists():
        shutil.rmtree(root, ignore_errors=True)
        retrieval = shared_data() / "retrieval"
        started = time.perf_counter()
        report = index_folder(retrieval / "images", settings, metadata=retrieval / "metadata.jsonl", clip=clip,
                              text_embedder=text, show_progress=True)
        (root / "built").write_text(json.dumps({"indexed": report.indexed, "seconds": time.perf_counter() - started}))
    _sync_native(settings, clip, text)
    return settings


def build_synthetic(root: Path, n: int, text, batch: int = 2000) -> Settings:
    from rag.milvus_hybrid import NativeHybridIndex
    from rag.store import CatalogStore

    settings = Settings(data_dir=root, clip_model="random-clip-vit-b32", text_model=text.model_name)
    if (root / "built").exists():
        return settings
    shutil.rmtree(root, ignore_errors=True)
    captions = real_captions(shared_data() / "retrieval" / "metadata.jsonl")
    records = list(synthetic_records(n, captions, seed=n))
    image = clustered_vectors(n, 512, seed=1)
    caption = clustered_vectors(n, 384, seed=2)
    started = time.perf_counter()
    store = CatalogStore(settings, image_dim=512, text_dim=384, expected_rows=n)
    native = NativeHybridIndex.open(settings, text_dim=384, clip_dim=512, client=store.client)
    try:
        for start in tqdm(range(0, n, batch), desc=f"writing {n:,} rows", disable=None):
            chunk = slice(start, start + batch)
            store.upsert(records[chunk], caption[chunk].tolist(), image[chunk].tolist())
            native.upsert(records[chunk], caption[chunk].tolist(), image[chunk].tolist(), expected_rows=n, flush=False)
        store.client.flush(native.name)
    finally:
        store.close()
    _release_embedded(settings)
    (root / "built").write_text(json.dumps({"rows": n, "seconds": time.perf_counter() - started}))
    return settings


def _sync_native(settings: Settings, clip, text) -> None:
    from rag.milvus_hybrid import NativeHybridIndex
    from rag.store import CatalogStore

    store = CatalogStore(settings, image_dim=clip.dim, text_dim=text.dim, create=False)
    try:
        NativeHybridIndex.open(settings, text_dim=text.dim, clip_dim=clip.dim, client=store.client).sync_from_store(store)
    finally:
        store.close()
    _release_embedded(settings)


def _release_embedded(settings: Settings) -> None:
    """pymilvus keeps an in-process Milvus Lite server per .db until exit: free the folder lock explicitly."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(settings.store_uri)


def stats(samples: list[float]) -> dict[str, float]:
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "mean": float(np.mean(samples))}


def measure(settings: Settings, clip, text, queries: list[str], warmup: int = 3) -> dict:
    from rag.milvus_hybrid import NativeHybridIndex, search_native
    from rag.search import SearchEngine

    started = time.perf_counter()
    engine = SearchEngine.open(settings, clip=clip, text_embedder=text)
    out: dict = {"open_s": time.perf_counter() - started, "rows": len(engine.catalog), "modes": {}, "milvus_only": {}}
    try:
        native = NativeHybridIndex.open(settings, text_dim=text.dim, clip_dim=clip.dim, client=engine.store.client)
        runners = {mode: (lambda q, m=mode: engine.search(q, mode=m, k=10)) for mode in engine.available_modes}
        if native.exists:
            runners["hybrid (Milvus-native)"] = lambda q: search_native(engine, q, k=10, index=native)
        results: dict[str, list[list[str]]] = {}
        scores: dict[str, list[list[float]]] = {}
        for name, run in runners.items():
            for q in queries[:warmup]:
                run(q)
            totals, ids, fused = [], [], []
            for q in tqdm(queries, desc=name, leave=False, disable=None):
                response = run(q)
                totals.append(response.timings_ms["total"])
                ids.append([r.id for r in response.results])
                fused.append([r.score for r in response.results])
            out["modes"][name] = stats(totals)
            results[name], scores[name] = ids, fused
        if "hybrid (Milvus-native)" in results:
            pairs = list(zip(results["hybrid"], results["hybrid (Milvus-native)"]))
            out["native_same_top10"] = float(np.mean([a == b for a, b in pairs]))
            # Identical fused score lists: any id difference is then only an order among exact ties
            # (e.g. images sharing one caption), which Milvus breaks arbitrarily at each route's top-50 cut.
            out["native_same_scores"] = float(np.mean([len(a) == len(b) and np.allclose(a, b, rtol=1e-5, atol=0)
                                                       for a, b in zip(scores["hybrid"], scores["hybrid (Milvus-native)"])]))
            out["native_overlap_at_10"] = float(np.mean([len(set(a) & set(b)) / max(1, len(a)) for a, b in pairs]))
        out["milvus_only"] = measure_milvus_only(engine, clip, text, queries, native if native.exists else None)
        out["index_types"] = {
            name: engine.store.client.describe_index(name, "embedding").get("index_type")
            for name in (settings.image_collection, settings.caption_collection)
        }
    finally:
        engine.close()
    return out


def measure_milvus_only(engine, clip, text, queries: list[str], native) -> dict[str, dict[str, float]]:
    """Store round trips alone (query vectors precomputed): the lead's store.search (LlamaIndex, all fields
    returned) vs a plain MilvusClient.search returning ids only, and the native hybrid_search."""
    client, settings = engine.store.client, engine.settings
    caption_vectors = [text.get_query_embedding(q) for q in queries]
    clip_vectors = [clip.get_query_embedding(q) for q in queries]
    timings: dict[str, list[float]] = {}

    def timed(name: str, fn) -> None:
        fn()
        samples = []
        for i in range(len(queries)):
            started = time.perf_counter()
            fn(i)
            samples.append((time.perf_counter() - started) * 1000)
        timings[name] = samples

    timed("caption: store.search (LlamaIndex, k=50)", lambda i=0: engine.store.search("caption", caption_vectors[i], 50))
    timed("caption: MilvusClient.search ids only (k=50)", lambda i=0: client.search(
        settings.caption_collection, data=[caption_vectors[i]], limit=50, anns_field="embedding", output_fields=["id"]))
    timed("clip: store.search (LlamaIndex, k=50)", lambda i=0: engine.store.search("image", clip_vectors[i], 50))
    timed("clip: MilvusClient.search ids only (k=50)", lambda i=0: client.search(
        settings.image_collection, data=[clip_vectors[i]], limit=50, anns_field="embedding", output_fields=["id"]))
    if native is not None:
        timed("native hybrid_search (3 routes x 50)", lambda i=0: native.search(
            text=queries[i], caption_vector=caption_vectors[i], clip_vector=clip_vectors[i], k=10))
    return {name: stats(samples) for name, samples in timings.items()}


def run_size(size: str, stores: list[str], clip, text, queries: list[str]) -> dict:
    from rag.dev.milvus_server import MilvusLiteServer

    root = STORES / size
    started = time.perf_counter()
    settings = build_sample(root, clip, text) if size == "sample" else build_synthetic(root, int(size), text)
    build = json.loads((root / "built").read_text())
    result = {"size": size, "build": build, "prepare_s": time.perf_counter() - started, "stores": {}}
    for kind in stores:
        print(f"== {size}: {kind}", flush=True)
        if kind == "embedded":
            result["stores"][kind] = measure(settings, clip, text, queries)
            _release_embedded(settings)
        else:
            with MilvusLiteServer(Path(settings.store_uri), blas_threads=BLAS_THREADS) as server:
                result["stores"][kind] = measure(settings.with_(uri=server.uri), clip, text, queries)
    return result


def render(report: dict) -> str:
    lines = [f"Machine: {report['machine']}; {report['load_before']} at start, {report.get('load_after', '?')} at end.",
             f"Queries: {report['queries']} gold queries per mode (k=10; each retriever fetches 50). "
             f"Threads: torch {report['torch_threads']}, OpenBLAS {report['blas_threads']} (search process and server).", ""]
    mode_rows, store_rows, other_rows = [], [], []
    for res in report["sizes"]:
        for kind, m in res["stores"].items():
            label = f"{res['size']} ({m['rows']:,} images)"
            for mode, s in m["modes"].items():
                mode_rows.append([label, kind, mode, s["p50"], s["p99"]])
            for name, s in m["milvus_only"].items():
                store_rows.append([label, kind, name, s["p50"], s["p99"]])
            other_rows.append([label, kind, f"{m['open_s']:.1f}", ", ".join(f"{k.split('_')[-1]}={v}" for k, v in m["index_types"].items()),
                               f"{m.get('native_same_top10', float('nan')):.2f}", f"{m.get('native_same_scores', float('nan')):.2f}",
                               f"{m.get('native_overlap_at_10', float('nan')):.3f}"])
    lines += ["End to end (SearchEngine.search: query embedding + Milvus + BM25 + fusion), ms:", "",
              markdown_table(["catalog", "store", "mode", "p50 ms", "p99 ms"], mode_rows), "",
              "Store round trips alone (query vectors precomputed), ms:", "",
              markdown_table(["catalog", "store", "call", "p50 ms", "p99 ms"], store_rows), "",
              markdown_table(["catalog", "store", "SearchEngine.open s", "dense index", "native top-10 ids = LlamaIndex",
                              "native fused scores = LlamaIndex", "overlap@10"], other_rows)]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = report["sizes"]
    stores = list(sizes[0]["stores"])
    modes = list(sizes[0]["stores"][stores[0]]["modes"])
    fig, axes = plt.subplots(1, len(stores), figsize=(6 * len(stores), 4), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], stores):
        x = np.arange(len(sizes))
        width = 0.8 / len(modes)
        for j, mode in enumerate(modes):
            p50 = [s["stores"][kind]["modes"].get(mode, {}).get("p50", np.nan) for s in sizes]
            p99 = [s["stores"][kind]["modes"].get(mode, {}).get("p99", np.nan) for s in sizes]
            bars = ax.bar(x + j * width, p50, width, label=mode)
            ax.errorbar(x + j * width, p50, yerr=[np.zeros(len(p50)), np.subtract(p99, p50)], fmt="none",
                        ecolor=bars.patches[0].get_facecolor(), capsize=2, alpha=0.6)
        ax.set_xticks(x + 0.4 - width / 2, [f"{s['size']}" for s in sizes])
        ax.set_yscale("log")
        ax.set_title(f"{kind}: p50 (bar) to p99 (whisker)")
        ax.set_ylabel("ms per query")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("mmrag query latency by catalog size (2-core dev box)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="sample,10000,100000")
    parser.add_argument("--stores", default="embedded,server")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--blas-threads", default="1",
                        help="OpenBLAS threads in this process and the server ('default' = leave as is)")
    parser.add_argument("--torch-threads", default="1", help="torch intra-op threads for query embedding ('default' = leave as is)")
    parser.add_argument("--out", type=Path, default=None, help="write markdown (+ .json, .png) here")
    args = parser.parse_args(argv)
    if args.torch_threads != "default":
        import torch

        torch.set_num_threads(int(args.torch_threads))
    if args.blas_threads != "default":
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(args.blas_threads), user_api="blas")
    global BLAS_THREADS
    BLAS_THREADS = None if args.blas_threads == "default" else int(args.blas_threads)

    from rag.clip_embedding import ClipEmbedding
    from rag.text_embedding import make_text_embedder

    clip = ClipEmbedding.from_pretrained(str(random_clip_dir()))
    text = make_text_embedder("all-MiniLM-L6-v2")
    queries = gold_queries(args.queries)
    report = {"machine": machine(), "load_before": load_average(), "queries": len(queries), "blas_threads": args.blas_threads,
              "torch_threads": args.torch_threads, "sizes": []}
    for size in args.sizes.split(","):
        report["sizes"].append(run_size(size, args.stores.split(","), clip, text, queries))
        if args.out:  # keep what is measured even if a later size is interrupted
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    report["load_after"] = load_average()
    text_out = render(report)
    print(text_out)
    if args.out:
        args.out.write_text(text_out + "\n")
        plot(report, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
