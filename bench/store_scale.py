"""Store scale (issue 9): open time, search-process RSS and hybrid p50/p99 per catalog size and store,
for today's retrieval core and, side by side, the old one (b5eb4c0, checked out at --old-tree).

    python bench/store_scale.py [--sizes 567,10000,100000] [--store lite|server|both] [--no-old]

Catalogs are synthetic: clustered unit vectors (512-d CLIP, 384-d caption) and captions recombined from the
real sample captions (bench/synthetic.py), written straight through each code's CatalogStore. Queries are
the gold query texts (so BM25 sees real terms) with synthetic query vectors near the catalog's cluster
centres in place of CLIP / MiniLM embeddings: no model is loaded, so every figure is retrieval only (Milvus +
BM25 + fusion + fetch), valid as speed, never as quality. Hybrid = CLIP + caption + BM25 channels.

Every measurement runs in a fresh subprocess (`--step measure-*`), so open time and RSS are those of a
search process that just started: RSS after imports, after `SearchEngine.open` (models passed in, so the
timed open is the store open), after the first hybrid query (on a server without the BM25 function that
query reads every text for the client-side BM25), and the peak (VmHWM).

Stores: "lite" = embedded Milvus Lite (data under --work, in-process, so its engine's memory is the search
process's); "server" = a real Milvus 2.3.5 standalone (PyPI `milvus`), started by rag/dev/milvus_standalone.py
inside a private network namespace (`unshare -n`; it binds every interface), the bench's subprocesses with it.
Built stores are kept under --work and reused (delete the folder to rebuild).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _common import REPO, load_average, markdown_table, percentile, shared_data  # noqa: E402
from synthetic import clustered_vectors, near_centre_queries, real_captions, synthetic_rows  # noqa: E402

CLIP_DIM, TEXT_DIM = 512, 384
CLIP_MODEL, TEXT_MODEL = "synthetic-clip-512", "synthetic-text-384"
HYBRID_CHANNELS = ("clip", "caption", "bm25")
BATCH = 2000
PORT = 19530
NETNS = 'ip link set lo up && exec "$@"'  # as rag/dev/milvus_standalone.run_in_netns, but with our stdio
DEFAULT_OLD_TREE = Path("/work/wt-base")
RESULTS = REPO / "bench" / "results" / "store_scale.json"


# ---------------------------------------------------------------------------------------------- helpers
def proc_status(pid: int | str = "self") -> dict[str, float]:
    """VmRSS / VmHWM of a process in MB (from /proc; VmHWM is the peak RSS)."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def rss_mb(pid: int | str = "self") -> float:
    return round(proc_status(pid).get("VmRSS", float("nan")), 1)


def stats(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50": percentile(samples, 50), "p99": percentile(samples, 99),
            "mean": float(np.mean(samples)) if samples else float("nan")}


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


ORIGINAL_GOLD = 61  # gold_queries.json's first 61 queries: the set both cores were measured with


def gold_texts(n: int) -> list[str]:
    queries = json.loads((REPO / "gold_queries.json").read_text())["queries"][:ORIGINAL_GOLD]
    texts = list(dict.fromkeys([q["short"] for q in queries] + [q["descriptive"] for q in queries]))
    return texts[:n]


class QueryVectors:
    """Stands in for a loaded CLIP / text model at query time: each gold query text maps to a synthetic vector
    near a cluster centre of the catalog (duck-typed for both cores: .dim, .model_name, get_query_embedding)."""

    def __init__(self, name: str, vectors: dict[str, list[float]]) -> None:
        self.model_name = self.model_id = name
        self.dim = len(next(iter(vectors.values())))
        self._vectors = vectors
        self._pool = list(vectors.values())

    def get_query_embedding(self, text: str) -> list[float]:
        # A part of a parsed query ("kitchen" of "kitchen no people") gets a pool vector chosen by its text.
        return self._vectors.get(text) or self._pool[zlib.crc32(text.encode()) % len(self._pool)]


def query_models(n: int, texts: list[str]) -> tuple[QueryVectors, QueryVectors]:
    clip = near_centre_queries(n, CLIP_DIM, len(texts), seed=1)
    caption = near_centre_queries(n, TEXT_DIM, len(texts), seed=2)
    return (QueryVectors(CLIP_MODEL, {t: v.tolist() for t, v in zip(texts, clip)}),
            QueryVectors(TEXT_MODEL, {t: v.tolist() for t, v in zip(texts, caption)}))


def limit_threads() -> None:
    """One torch + one BLAS thread, as both cores' search processes do (bench/RESULTS.md 2b)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")


def catalog(n: int) -> tuple[list[Any], np.ndarray, np.ndarray]:
    captions = real_captions(shared_data() / "retrieval" / "metadata.jsonl")
    return list(synthetic_rows(n, captions, seed=n)), clustered_vectors(n, CLIP_DIM, seed=1), clustered_vectors(n, TEXT_DIM, seed=2)


def wait_indexed(client: Any, collections: list[str], timeout_s: float = 600) -> float:
    """Wait until a server reports every index of these collections built (Milvus Lite reports no state)."""
    started = time.perf_counter()
    for name in collections:
        for index in client.list_indexes(name):
            while True:
                info = client.describe_index(name, index)
                total, done = info.get("total_rows"), info.get("indexed_rows")
                state = str(info.get("state", ""))
                if total is None or state.endswith("Finished") or (done is not None and done >= total):
                    break
                if time.perf_counter() - started > timeout_s:
                    raise TimeoutError(f"index {name}.{index} not built after {timeout_s:.0f}s: {info}")
                time.sleep(1)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------- steps (subprocesses)
def new_settings(args: argparse.Namespace) -> Any:
    from rag.config import Settings

    return Settings(data_dir=Path(args.root), uri=args.uri or None, collection_prefix=args.prefix,
                    clip_model=CLIP_MODEL, text_model=TEXT_MODEL)


def step_build_new(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from rag.channels import declared
    from rag.store import CatalogStore
    from synthetic import synthetic_records

    n = args.size
    captions = real_captions(shared_data() / "retrieval" / "metadata.jsonl")
    items = list(synthetic_records(n, captions, seed=n))
    clip, caption = clustered_vectors(n, CLIP_DIM, seed=1), clustered_vectors(n, TEXT_DIM, seed=2)
    settings = new_settings(args)
    started = time.perf_counter()
    store = CatalogStore.open(settings, create=True, dims={"clip": CLIP_DIM, "text": TEXT_DIM},
                              channels=declared(HYBRID_CHANNELS), models={"clip_model": CLIP_MODEL, "text_model": TEXT_MODEL},
                              expected_rows=n)
    out: dict = {"caps": store.caps.label, "layout": store.info.layout, "collections": store.collections,
                 "search_params": store.info.search_params}
    try:
        for start in tqdm(range(0, n, BATCH), desc=f"new core: writing {n:,} rows", unit="batch"):
            chunk = slice(start, start + BATCH)
            store.upsert(items[chunk], {"clip": clip[chunk].tolist(), "caption": caption[chunk].tolist()})
        out["upsert_s"] = time.perf_counter() - started
        t = time.perf_counter()
        store.flush()
        out["flush_s"] = time.perf_counter() - t
        out["index_wait_s"] = wait_indexed(store.client, store.collections)
        out["rows"] = store.count()
        out["index_types"] = {f"{name}.{ix}": store.client.describe_index(name, ix).get("index_type")
                              for name in store.collections for ix in store.client.list_indexes(name)}
    finally:
        t = time.perf_counter()
        store.close()  # Lite: releasing the in-process server drains its background index builds
        out["close_s"] = time.perf_counter() - t
    out["build_s"] = time.perf_counter() - started
    return out


def step_build_old(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from rag.catalog import CatalogRecord  # the old core (PYTHONPATH=--old-tree)
    from rag.config import Settings
    from rag.store import CatalogStore

    n = args.size
    rows, clip, caption = catalog(n)
    records = [CatalogRecord(id=r.id, path=r.path, caption=r.caption, metadata=dict(r.metadata)) for r in rows]
    settings = Settings(data_dir=Path(args.root), clip_model=CLIP_MODEL, text_model=TEXT_MODEL)
    started = time.perf_counter()
    store = CatalogStore(settings, image_dim=CLIP_DIM, text_dim=TEXT_DIM, expected_rows=n)
    try:
        for start in tqdm(range(0, n, BATCH), desc=f"old core: writing {n:,} rows", unit="batch"):
            chunk = slice(start, start + BATCH)
            store.upsert(records[chunk], caption[chunk].tolist(), clip[chunk].tolist())  # flushes each batch
    finally:
        store.close()
    return {"build_s": time.perf_counter() - started, "rows": n}


def _timed_queries(run: Any, texts: list[str], warmup: int = 3) -> tuple[dict, float, float, str | None]:
    """(stats of the texts' latencies, first query ms, RSS MB after the first query, error) for one runner."""
    t = time.perf_counter()
    try:
        run(texts[0])
    except Exception as exc:  # e.g. native fusion on a server without hybrid_search: say so, go on
        return {}, float("nan"), rss_mb(), one_line(exc)
    first_ms = (time.perf_counter() - t) * 1000
    rss_first = rss_mb()
    for q in texts[1 : 1 + warmup]:
        run(q)
    samples = []
    for q in texts:
        t = time.perf_counter()
        run(q)
        samples.append((time.perf_counter() - t) * 1000)
    return stats(samples), first_ms, rss_first, None


def _open_engine(args: argparse.Namespace, settings_of) -> tuple[object, dict, list[str]]:
    """Import rag.search (timed), load the query models, then time SearchEngine.open on the store of this step:
    (engine, figures so far, query texts). settings_of(config module) builds the step's Settings."""
    t0 = time.perf_counter()
    import rag.config
    from rag.search import SearchEngine

    import_s = time.perf_counter() - t0
    limit_threads()
    texts = gold_texts(args.queries)
    clip, text = query_models(args.size, texts)
    out: dict = {"import_s": import_s, "rss_before_open_mb": rss_mb()}
    if args.server_pid:
        out["server_rss_before_mb"] = rss_mb(args.server_pid)
    t = time.perf_counter()
    engine = SearchEngine.open(settings_of(rag.config), clip=clip, text_embedder=text)  # models passed in: the store open
    out["open_s"] = time.perf_counter() - t
    out["rss_after_open_mb"] = rss_mb()
    return engine, out, texts


def _end_figures(args: argparse.Namespace, out: dict) -> dict:
    status = proc_status()
    out["rss_end_mb"] = round(status.get("VmRSS", float("nan")), 1)
    out["rss_peak_mb"] = round(status.get("VmHWM", float("nan")), 1)
    if args.server_pid:
        out["server_rss_after_mb"] = rss_mb(args.server_pid)
    return out


def step_measure_new(args: argparse.Namespace) -> dict:
    engine, out, texts = _open_engine(args, lambda _config: new_settings(args))
    try:
        out["rows"] = engine.count()
        out["caps"] = engine.store.caps.label
        out["layout"] = engine.store.info.layout
        out["channels"] = engine.channel_names
        out["bm25_in_server"] = engine.store.caps.bm25_function
        for fusion in ("client", "native"):
            result, first_ms, rss_first, error = _timed_queries(
                lambda q, f=fusion: engine.search(q, mode="hybrid", k=10, fusion=f), texts)
            out[fusion] = {"stats": result, "first_ms": first_ms, "rss_after_first_mb": rss_first, "error": error}
        if not engine.store.caps.bm25_function:  # the fallback alone: BM25 channel queries after its texts are read
            result, _, _, error = _timed_queries(lambda q: engine.search(q, mode="bm25", k=10), texts)
            out["bm25_client"] = {"stats": result, "error": error}
    finally:
        engine.close()
    return _end_figures(args, out)


def step_measure_old(args: argparse.Namespace) -> dict:
    # The old core (PYTHONPATH=--old-tree): its open reads every row back and builds BM25.
    engine, out, texts = _open_engine(args, lambda config: config.Settings(
        data_dir=Path(args.root), clip_model=CLIP_MODEL, text_model=TEXT_MODEL))
    try:
        out["rows"] = len(engine.catalog)
        result, first_ms, rss_first, error = _timed_queries(lambda q: engine.search(q, mode="hybrid", k=10), texts)
        out["client"] = {"stats": result, "first_ms": first_ms, "rss_after_first_mb": rss_first, "error": error}
    finally:
        engine.close()
    return _end_figures(args, out)


def step_settle(args: argparse.Namespace) -> dict:
    """Open once after a build and run one query per fusion: a server loads the collections, Milvus Lite
    builds any index sidecar still missing. Not reported as a figure; keeps the measured open honest."""
    from rag.search import SearchEngine

    texts = gold_texts(3)
    clip, text = query_models(args.size, texts)
    t = time.perf_counter()
    with SearchEngine.open(new_settings(args), clip=clip, text_embedder=text) as engine:
        out = {"open_s": time.perf_counter() - t}
        for fusion in ("client", "native"):
            try:
                engine.search(texts[0], mode="hybrid", k=10, fusion=fusion)
            except Exception as exc:
                out[f"{fusion}_error"] = one_line(exc)
    return out


STEPS = {"build-new": step_build_new, "build-old": step_build_old, "measure-new": step_measure_new,
         "measure-old": step_measure_old, "settle": step_settle}


# ---------------------------------------------------------------------------------------------- orchestration
def run_step(step: str, args: argparse.Namespace, *, size: int, root: Path, old: bool = False, uri: str | None = None,
             prefix: str = "bench", server_pid: int | None = None) -> dict:
    """One step in a fresh Python process; returns its JSON (or {"error": ...})."""
    result = Path(args.work) / f"result-{os.getpid()}-{step}-{size}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--size", str(size), "--root", str(root),
           "--prefix", prefix, "--queries", str(args.queries), "--result", str(result)]
    if uri:
        cmd += ["--uri", uri]
    if server_pid:
        cmd += ["--server-pid", str(server_pid)]
    env = dict(os.environ, PYTHONPATH=str(args.old_tree if old else REPO), TOKENIZERS_PARALLELISM="false")
    load = os.getloadavg()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        code = proc.wait(timeout=args.step_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"error": f"{step} did not finish within {args.step_timeout} s (killed)", "load_before": load}
    wall = time.perf_counter() - started
    if code != 0 or not result.exists():
        return {"error": f"{step} exited {code}", "load_before": load, "wall_s": wall}
    data = json.loads(result.read_text())
    result.unlink()
    data.update(load_before=[round(x, 2) for x in load], wall_s=wall)
    return data


def _built(marker: Path) -> dict | None:
    return json.loads(marker.read_text()) if marker.exists() else None


def suite(args: argparse.Namespace, store: str, *, uri: str | None = None, server_pid: int | None = None) -> list[dict]:
    """Build (once) and measure every size for one store; the old core only on Lite."""
    work = Path(args.work) / store
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for size in args.size_list:
        codes = [c for c in ["new"] + (["old"] if store == "lite" and not args.no_old else []) if c in args.codes]
        for code in codes:
            print(f"== {store} / {code} core / {size:,} images", file=sys.stderr, flush=True)
            root = work / f"{code}-{size}"
            prefix = f"s{size}"
            marker = work / f"{code}-{size}.built.json"
            build = _built(marker)
            if build is None:
                build = run_step(f"build-{code}", args, size=size, root=root, old=code == "old", uri=uri, prefix=prefix)
                if "error" in build:
                    runs.append({"store": store, "code": code, "size": size, "build": build})
                    continue
                if code == "new":
                    build["settle"] = run_step("settle", args, size=size, root=root, uri=uri, prefix=prefix)
                marker.write_text(json.dumps(build, indent=2))
            elif code == "new" and store == "server":  # a restarted server loads its collections on first open
                build = {**build, "settle_after_restart": run_step("settle", args, size=size, root=root, uri=uri, prefix=prefix)}
            measure = run_step(f"measure-{code}", args, size=size, root=root, old=code == "old", uri=uri, prefix=prefix,
                               server_pid=server_pid)
            runs.append({"store": store, "code": code, "size": size, "build": build, "measure": measure})
            print(json.dumps(measure, indent=1)[:3000], file=sys.stderr, flush=True)
    return runs


def lite_server_suite(args: argparse.Namespace) -> list[dict]:
    """The Lite stores built above, served by `milvus-lite server` on 127.0.0.1 (rag/dev/milvus_server.py): the
    search process is then a client only, on a store that has the BM25 function."""
    from rag.dev.milvus_server import MilvusLiteServer

    runs = []
    for size in args.size_list:
        root = Path(args.work) / "lite" / f"new-{size}"
        build = _built(Path(args.work) / "lite" / f"new-{size}.built.json")
        if build is None:
            runs.append({"store": "lite-server", "code": "new", "size": size, "build": {"error": "no Lite store built"}})
            continue
        print(f"== lite-server / new core / {size:,} images", file=sys.stderr, flush=True)
        prefix = f"s{size}"
        t = time.perf_counter()
        with MilvusLiteServer(root / "milvus.db", log_path=Path(args.work) / f"lite-server-{size}.log") as server:
            started_s = time.perf_counter() - t
            build = {**build, "server_start_s": started_s,
                     "settle": run_step("settle", args, size=size, root=root, uri=server.uri, prefix=prefix)}
            measure = run_step("measure-new", args, size=size, root=root, uri=server.uri, prefix=prefix,
                               server_pid=server.proc.pid)
            runs.append({"store": "lite-server", "code": "new", "size": size, "build": build, "measure": measure})
            print(json.dumps(measure, indent=1)[:3000], file=sys.stderr, flush=True)
    return runs


def server_suite(args: argparse.Namespace) -> list[dict]:
    """Inside the private network namespace: start Milvus 2.3.5, run the suite against it, stop it."""
    from rag.dev.milvus_standalone import MilvusStandalone

    work = Path(args.work)
    server = MilvusStandalone(work / "server-data", port=PORT, bin_cache=work / "milvus-bin", startup_timeout_s=180)
    t = time.perf_counter()
    server.start()
    started_s = time.perf_counter() - t
    try:
        runs = suite(args, "server", uri=server.uri, server_pid=server.pid)
    finally:
        server.stop()
    for run in runs:
        run["server_start_s"] = started_s
    return runs


def in_netns(args: argparse.Namespace) -> list[dict]:
    """Re-run this script with --step server-suite in a fresh network namespace whose only interface is lo."""
    out = Path(args.work) / "server-suite.json"
    out.unlink(missing_ok=True)
    cmd = ["unshare", "-n", "bash", "-c", NETNS, "bash", sys.executable, str(Path(__file__).resolve()),
           "--step", "server-suite", "--sizes", args.sizes, "--queries", str(args.queries), "--work", str(args.work),
           "--step-timeout", str(args.step_timeout), "--codes", args.codes, "--result", str(out)]
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(REPO)), start_new_session=True)
    try:
        proc.wait(timeout=args.step_timeout * (2 * len(args.size_list) + 2))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the server dies with its namespace's processes
        proc.wait()
    if not out.exists():
        return [{"store": "server", "code": "new", "size": 0, "error": f"server suite exited {proc.returncode}"}]
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------- report
def _ms(entry: dict | None) -> str:
    if not entry:
        return "-"
    if entry.get("error"):
        return "refused" if "hybrid_search" in entry["error"] else "error"
    s = entry.get("stats") or {}
    return f"{s['p50']:.1f} / {s['p99']:.1f}" if s else "-"


def render(report: dict) -> str:
    rows, growth = [], []
    order = {"old": 0, "new": 1, "new+page": 2}
    runs = sorted(report["runs"], key=lambda r: (r["store"], r["size"], order.get(r["code"], 3)))
    for run in runs:
        m = run.get("measure") or {}
        label = {"server": "Milvus 2.3.5 standalone", "lite": "Milvus Lite 3.2.2 embedded",
                 "lite-server": "`milvus-lite server` 3.2.2"}.get(run["store"], run["store"])
        if "error" in m or not m:
            rows.append([label, run["code"], f"{run['size']:,}", (m or run.get("build", {})).get("error", "not run"),
                         "", "", "", "", "", "", "", ""])
            continue
        client = m.get("client") or {}
        first = client.get("first_ms", float("nan"))
        rows.append([label, run["code"], f"{run['size']:,}", f"{m['open_s']:.2f}", f"{m['rss_after_open_mb']:.0f}",
                     f"{m['rss_peak_mb']:.0f}", _ms(client), _ms(m.get("native")), f"{first:.0f}",
                     f"{client.get('rss_after_first_mb', float('nan')) - m['rss_after_open_mb']:+.0f}",
                     f"{m['server_rss_after_mb']:.0f}" if m.get("server_rss_after_mb") else "-",
                     f"{m['load_before'][0]:.1f}" if m.get("load_before") else "?"])
    by_key = {(r["store"], r["code"], r["size"]): r.get("measure") or {} for r in runs}
    sizes = sorted({r["size"] for r in runs})
    for (store, code) in sorted({(r["store"], r["code"]) for r in runs}):
        small, big = by_key.get((store, code, sizes[0])), by_key.get((store, code, sizes[-1]))
        if len(sizes) > 1 and small and big and "open_s" in small and "open_s" in big:
            growth.append([store, code, f"{sizes[0]:,} → {sizes[-1]:,}",
                           f"{big['rss_after_open_mb'] - small['rss_after_open_mb']:+.0f}",
                           f"{big['rss_peak_mb'] - small['rss_peak_mb']:+.0f}"])
    text = [f"Machine: {report.get('machine', '?')}; load {report.get('load_before', '?')} at start, "
            f"{report.get('load_after', '?')} at end. {report.get('queries', '?')} gold query texts per fusion, k=10, "
            "50 candidates per channel; synthetic query vectors (no model loaded: retrieval only, speed only).", "",
            markdown_table(["store", "core", "catalog", "open s", "RSS after open MB", "RSS peak MB",
                            "hybrid client p50 / p99 ms", "hybrid native p50 / p99 ms", "1st client query ms",
                            "RSS +1st query MB", "server RSS MB", "load"], rows)]
    if growth:
        text += ["", "Search-process RSS growth from the smallest to the largest catalog (MB):", "",
                 markdown_table(["store", "core", "catalog", "after open", "peak"], growth)]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="567,10000,100000")
    parser.add_argument("--store", choices=("lite", "lite-server", "server", "both", "all"), default="all",
                        help="lite: embedded Milvus Lite; lite-server: the same stores behind `milvus-lite server`; "
                             "server: Milvus 2.3.5 standalone; both: lite + server; all: the three")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--no-old", action="store_true", help="skip the old core's figures")
    parser.add_argument("--codes", default="new,old", help="which cores to run: new, old or both (default)")
    parser.add_argument("--old-tree", type=Path, default=DEFAULT_OLD_TREE, help="checkout of the old core (b5eb4c0)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench9"), help="stores and server data (reused)")
    parser.add_argument("--step-timeout", type=int, default=600, help="seconds per build / measure subprocess")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results (merged with what is there)")
    parser.add_argument("--step", choices=[*STEPS, "server-suite"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true", help="only print the table of what --out holds")
    args = parser.parse_args(argv)
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.work.mkdir(parents=True, exist_ok=True)
    if args.step == "server-suite":
        args.result.write_text(json.dumps(server_suite(args), indent=2))
        return 0
    if args.step:
        import logging

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
        args.result.write_text(json.dumps(STEPS[args.step](args), indent=2, default=str))
        return 0

    if args.render:
        print(render(json.loads(args.out.read_text())))
        return 0
    from _common import machine

    report = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    report.update(machine=machine(), load_before=load_average(), queries=args.queries)
    new_runs: list[dict] = []
    if args.store in ("lite", "both", "all"):
        new_runs += suite(args, "lite")
    if args.store in ("lite-server", "all"):
        new_runs += lite_server_suite(args)
    if args.store in ("server", "both", "all"):
        new_runs += in_netns(args)
    keys = {(r["store"], r["code"], r["size"]) for r in new_runs}
    report["runs"] = [r for r in report["runs"] if (r["store"], r["code"], r["size"]) not in keys] + new_runs
    report["load_after"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
