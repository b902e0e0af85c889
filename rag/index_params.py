"""Dense-vector index parameters for Milvus: FLAT for small catalogs, HNSW beyond, all overridable.

`index_params_for` returns (index_config, search_config) in the shape
`llama_index.vector_stores.milvus.MilvusVectorStore(index_config=..., search_config=...)` takes:
index_config is flat ({"index_type", "metric_type", **build params}, plus the same build params nested
under "params" so Milvus Lite honours them), search_config is the flat search-params dict ({"ef": 64}
for HNSW, {} for FLAT). pymilvus accepts the flat search dict both
as `search_params=` (plain search) and as `AnnSearchRequest(param={"params": ...})` (hybrid search).
"""

from __future__ import annotations

import logging
from typing import Any

from rag.errors import MmragError

log = logging.getLogger(__name__)

# Up to this many vectors an exact scan is fast and exact, so FLAT is the default (bench/RESULTS.md):
# a Milvus server scans 20k vectors in about a millisecond; Milvus Lite's pure-Python FLAT path costs
# ~4 ms at 567 vectors, ~40-70 ms at 10k and ~400 ms at 100k per query, while its HNSW costs ~6 ms at 10k.
FLAT_MAX_VECTORS = 20_000
LITE_FLAT_MAX_VECTORS = 2_000

METRICS = ("COSINE", "IP", "L2")
# Milvus Lite 3.2.x (embedded or `milvus-lite server`) builds these with FAISS / numpy.
LITE_INDEX_TYPES = frozenset({"FLAT", "BRUTE_FORCE", "AUTOINDEX", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8"})
# A Milvus 2.5/2.6 standalone server additionally builds these (CPU build).
SERVER_INDEX_TYPES = LITE_INDEX_TYPES | frozenset({"IVF_PQ", "SCANN", "DISKANN", "IVF_RABITQ", "HNSW_PQ", "HNSW_PRQ"})

# Build-time parameters per index type, and the search-time parameter(s) that go with them.
BUILD_KEYS: dict[str, tuple[str, ...]] = {
    "FLAT": (),
    "BRUTE_FORCE": (),
    "AUTOINDEX": (),
    "HNSW": ("M", "efConstruction"),
    "HNSW_SQ": ("M", "efConstruction", "sq_type"),
    "HNSW_PQ": ("M", "efConstruction", "m", "nbits"),
    "HNSW_PRQ": ("M", "efConstruction", "m", "nbits", "nrq"),
    "IVF_FLAT": ("nlist",),
    "IVF_SQ8": ("nlist",),
    "IVF_PQ": ("nlist", "m", "nbits"),
    "IVF_RABITQ": ("nlist",),
    "SCANN": ("nlist", "with_raw_data"),
    "DISKANN": (),
}
SEARCH_KEYS: dict[str, tuple[str, ...]] = {
    "HNSW": ("ef",),
    "HNSW_SQ": ("ef",),
    "HNSW_PQ": ("ef",),
    "HNSW_PRQ": ("ef",),
    "IVF_FLAT": ("nprobe",),
    "IVF_SQ8": ("nprobe",),
    "IVF_PQ": ("nprobe",),
    "IVF_RABITQ": ("nprobe",),
    "SCANN": ("nprobe", "reorder_k"),
    "DISKANN": ("search_list",),
}
def hnsw_defaults(n_vectors: int) -> dict[str, int]:
    """M / efConstruction / ef that keep recall@10 >= ~0.98 at this size (bench/ann_recall.py)."""
    if n_vectors <= 1_000_000:
        return {"M": 16, "efConstruction": 200, "ef": 64}
    return {"M": 32, "efConstruction": 360, "ef": 128}


def ivf_defaults(n_vectors: int) -> dict[str, int]:
    """nlist ~ 4*sqrt(n) (Milvus' guidance), nprobe ~ nlist/16 with a floor."""
    nlist = int(min(65536, max(16, 4 * int(n_vectors**0.5))))
    return {"nlist": nlist, "nprobe": max(8, nlist // 16)}


def default_index_type(n_vectors: int, server: bool = False) -> str:
    return "FLAT" if n_vectors <= (FLAT_MAX_VECTORS if server else LITE_FLAT_MAX_VECTORS) else "HNSW"


def _check_positive(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise MmragError(f"index parameter {key}={value!r} must be a positive integer")
    return value


def index_params_for(
    n_vectors: int,
    metric: str = "COSINE",
    overrides: dict | None = None,
    server: bool = False,
) -> tuple[dict, dict]:
    """(index_config, search_config) for a dense field expected to hold about n_vectors vectors.

    overrides may set index_type, M, efConstruction, ef, nlist, nprobe (and other keys the chosen
    index type knows). server=False means Milvus Lite (embedded, or `milvus-lite server`: see
    rag.milvus_caps), which builds only LITE_INDEX_TYPES: a type it cannot build falls back to HNSW
    (or FLAT for small catalogs) with a logged note. server=True means a Milvus standalone/cluster.
    """
    metric = metric.upper()
    if metric not in METRICS:
        raise MmragError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    if n_vectors < 0:
        raise MmragError(f"n_vectors must be >= 0, got {n_vectors}")
    opts = dict(overrides or {})
    index_type = str(opts.pop("index_type", "") or default_index_type(n_vectors, server)).upper()
    supported = SERVER_INDEX_TYPES if server else LITE_INDEX_TYPES
    if index_type not in SERVER_INDEX_TYPES:
        raise MmragError(f"unknown index type {index_type!r}: expected one of {', '.join(sorted(SERVER_INDEX_TYPES))}")
    if index_type not in supported:
        fallback = default_index_type(n_vectors, server)
        log.warning("Milvus Lite cannot build %s; using %s instead (a Milvus server can)", index_type, fallback)
        index_type = fallback
        opts = {k: v for k, v in opts.items() if k in BUILD_KEYS[fallback] + SEARCH_KEYS.get(fallback, ())}

    build_keys, search_keys = BUILD_KEYS[index_type], SEARCH_KEYS.get(index_type, ())
    unknown = sorted(set(opts) - set(build_keys) - set(search_keys))
    if unknown:
        raise MmragError(f"index parameter(s) {', '.join(unknown)} do not apply to {index_type}")

    if index_type.startswith("HNSW"):
        params: dict[str, Any] = hnsw_defaults(n_vectors) | opts
    elif index_type.startswith("IVF") or index_type == "SCANN":
        params = ivf_defaults(n_vectors) | opts
    else:
        params = dict(opts)
    for key in ("M", "efConstruction", "ef", "nlist", "nprobe"):
        if key in params:
            _check_positive(key, params[key])
    if "M" in params and not 2 <= params["M"] <= 2048:
        raise MmragError(f"HNSW M={params['M']} is outside Milvus' range 2..2048")

    build = {k: params[k] for k in build_keys if k in params}
    index_config: dict[str, Any] = {"index_type": index_type, "metric_type": metric, **build}
    if build:
        # pymilvus 2.6 sends build params as top-level key/values, which Milvus Lite 3.2's gRPC adapter
        # silently drops (it reads only the legacy JSON "params" key): send both; a server accepts both.
        index_config["params"] = dict(build)
    search_config = {k: params[k] for k in search_keys if k in params}
    return index_config, search_config


def search_config_for_k(search_config: dict, k: int) -> dict:
    """Milvus rejects HNSW searches whose ef is below the limit k: raise ef to k when needed."""
    if "ef" in search_config and search_config["ef"] < k:
        return {**search_config, "ef": k}
    return dict(search_config)
