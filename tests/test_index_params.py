"""index_params_for: defaults by catalog size, overrides, Lite fallbacks, and recall against exact search."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from rag.errors import MmragError
from rag.index_params import (
    FLAT_MAX_VECTORS,
    LITE_FLAT_MAX_VECTORS,
    index_params_for,
    search_config_for_k,
)
from rag.milvus_caps import detect


def test_small_catalog_is_flat_and_exact():
    index_config, search_config = index_params_for(567)
    assert index_config == {"index_type": "FLAT", "metric_type": "COSINE"}
    assert search_config == {}


def test_large_catalog_is_hnsw_with_defaults():
    index_config, search_config = index_params_for(100_000, metric="ip")
    assert index_config == {"index_type": "HNSW", "metric_type": "IP", "M": 16, "efConstruction": 200,
                            "params": {"M": 16, "efConstruction": 200}}
    assert search_config == {"ef": 64}


def test_threshold_boundary_lite_and_server():
    # Milvus Lite's exact scan is pure Python: HNSW pays from a few thousand vectors; a server scans 20k fast.
    assert index_params_for(LITE_FLAT_MAX_VECTORS)[0]["index_type"] == "FLAT"
    assert index_params_for(LITE_FLAT_MAX_VECTORS + 1)[0]["index_type"] == "HNSW"
    assert index_params_for(FLAT_MAX_VECTORS, server=True)[0]["index_type"] == "FLAT"
    assert index_params_for(FLAT_MAX_VECTORS + 1, server=True)[0]["index_type"] == "HNSW"
    assert LITE_FLAT_MAX_VECTORS < FLAT_MAX_VECTORS


def test_capabilities_come_from_the_server_version(tmp_path):
    class Standalone:
        def __init__(self, version: str) -> None:
            self.version = version

        def get_server_version(self) -> str:
            return self.version

    class Broken:
        def get_server_version(self) -> str:
            raise RuntimeError("unimplemented")

    client = MilvusClient(str(tmp_path / "v.db"))
    lite = detect(client)
    client.close()
    assert lite.lite and lite.multi_vector and lite.bm25_function and lite.hybrid_search and not lite.filter_templates
    old = detect(Standalone("v2.3.5-lite"))  # the PyPI `milvus` 2.3.5 server calls itself "-lite": not Milvus Lite
    assert not old.lite and not old.multi_vector and not old.bm25_function and not old.hybrid_search
    v24 = detect(Standalone("v2.4.15"))
    assert v24.multi_vector and v24.hybrid_search and not v24.bm25_function and not v24.filter_templates
    v26 = detect(Standalone("v2.6.9"))
    assert v26.multi_vector and v26.bm25_function and v26.hybrid_search and v26.filter_templates
    unknown = detect(Broken())
    assert not (unknown.lite or unknown.multi_vector or unknown.bm25_function)


def test_very_large_catalog_raises_graph_degree():
    index_config, search_config = index_params_for(5_000_000, server=True)
    assert index_config["M"] == 32 and search_config["ef"] == 128


def test_overrides_win_and_split_into_build_and_search():
    index_config, search_config = index_params_for(
        100, overrides={"index_type": "hnsw", "M": 8, "efConstruction": 64, "ef": 32}
    )
    assert index_config == {"index_type": "HNSW", "metric_type": "COSINE", "M": 8, "efConstruction": 64,
                            "params": {"M": 8, "efConstruction": 64}}
    assert search_config == {"ef": 32}


def test_ivf_defaults_scale_with_size():
    index_config, search_config = index_params_for(1_000_000, overrides={"index_type": "IVF_FLAT"})
    assert index_config["nlist"] == 4000 and search_config == {"nprobe": 250}


def test_server_only_type_falls_back_on_lite_with_a_note(caplog):
    with caplog.at_level(logging.WARNING, logger="rag.index_params"):
        index_config, search_config = index_params_for(50_000, overrides={"index_type": "DISKANN"})
    assert index_config["index_type"] == "HNSW" and search_config == {"ef": 64}
    assert "Milvus Lite cannot build DISKANN" in caplog.text
    # A real Milvus server builds it as asked.
    assert index_params_for(50_000, overrides={"index_type": "DISKANN"}, server=True)[0]["index_type"] == "DISKANN"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric": "hamming"}, "unknown metric"),
        ({"overrides": {"index_type": "ANNOY"}}, "unknown index type"),
        ({"overrides": {"index_type": "FLAT", "M": 8}}, "do not apply to FLAT"),
        ({"overrides": {"index_type": "HNSW", "M": 0}}, "must be a positive integer"),
        ({"overrides": {"index_type": "HNSW", "M": 4096}}, "outside Milvus' range"),
        ({"overrides": {"index_type": "HNSW", "ef": "64"}}, "must be a positive integer"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, message):
    with pytest.raises(MmragError, match=message):
        index_params_for(1000, **kwargs)


def test_overrides_from_env():
    from rag.config import index_overrides_from_env as overrides_from_env

    env = {"MMRAG_INDEX_TYPE": "HNSW", "MMRAG_HNSW_M": "24", "MMRAG_HNSW_EF": "100", "MMRAG_IVF_NLIST": ""}
    assert overrides_from_env(env) == {"index_type": "HNSW", "M": 24, "ef": 100}
    with pytest.raises(MmragError, match="MMRAG_HNSW_M='x'"):
        overrides_from_env({"MMRAG_HNSW_M": "x"})


def test_search_config_for_k_raises_ef_only_when_needed():
    assert search_config_for_k({"ef": 64}, 10) == {"ef": 64}
    assert search_config_for_k({"ef": 64}, 200) == {"ef": 200}
    assert search_config_for_k({}, 200) == {}


def _recall_at_10(client: MilvusClient, name: str, queries: np.ndarray, truth: np.ndarray, search_config: dict) -> float:
    hits = client.search(name, data=queries.tolist(), limit=10, anns_field="v", search_params=search_config)
    return float(np.mean([len({h["id"] for h in hits[i]} & set(truth[i].tolist())) / 10 for i in range(len(queries))]))


def test_configs_build_in_milvus_lite_and_hnsw_recall_matches_exact(tmp_path):
    """Each config is accepted by Milvus Lite as-is; the HNSW graph really answers and its build parameters
    are honoured (a starved graph loses recall at the same ef), and the defaults keep recall@10 near exact."""
    rng = np.random.default_rng(7)
    data = rng.standard_normal((3000, 32)).astype(np.float32)
    queries = rng.standard_normal((25, 32)).astype(np.float32)
    normed = data / np.linalg.norm(data, axis=1, keepdims=True)
    truth = np.argsort(-(queries @ normed.T), axis=1)[:, :10]

    client = MilvusClient(str(tmp_path / "ip.db"))
    cases = {
        "flat": index_params_for(500),
        "hnsw": index_params_for(100_000),
        # Same search-time ef as "hnsw": only the build parameters differ, so they must reach Milvus Lite.
        "starved": index_params_for(100, overrides={"index_type": "HNSW", "M": 2, "efConstruction": 4}),
    }
    recalls = {}
    for name, (index_config, search_config) in cases.items():
        cfg = dict(index_config)
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=32)
        client.create_collection(name, schema=schema)
        client.insert(name, [{"id": i, "v": row.tolist()} for i, row in enumerate(data)])
        client.flush(name)
        # Index after the flush: Milvus Lite then builds it synchronously for the sealed segment, so the
        # index (not the brute-force path it uses for unindexed rows) answers, with no background race.
        params = client.prepare_index_params()
        index_type, metric = cfg.pop("index_type"), cfg.pop("metric_type")
        # What LlamaIndex's MilvusVectorStore does with index_config (_add_dense_index_params).
        params.add_index(field_name="v", index_type=index_type, metric_type=metric, **({"params": cfg} if cfg else {}))
        client.create_index(name, params)
        assert client.describe_index(name, "v")["index_type"] == index_type
        recalls[name] = _recall_at_10(client, name, queries, truth, search_config)
    client.close()
    assert recalls["flat"] == 1.0
    assert recalls["hnsw"] >= 0.95
    assert recalls["starved"] < 0.9, recalls


def test_index_type_overrides_from_the_environment_reach_the_created_collection(tmp_path):
    """MMRAG_INDEX_TYPE / MMRAG_HNSW_* are read by Settings and used when the catalog is created."""
    from rag.config import Settings
    from rag.store import CatalogStore

    env = {"MMRAG_DATA_DIR": str(tmp_path), "MMRAG_INDEX_TYPE": "HNSW", "MMRAG_HNSW_M": "8", "MMRAG_HNSW_EF": "40"}
    settings = Settings.from_env(env)
    assert settings.index_overrides == {"index_type": "HNSW", "M": 8, "ef": 40}
    with CatalogStore.open(settings, create=True, dims={"text": 16}, models={"text_model": "t"}) as store:
        index = store.client.describe_index(store.primary, "caption_vector")
        assert index["index_type"] == "HNSW" and int(index.get("M") or index["params"]["M"]) == 8
        assert store.info.search_params["caption_vector"] == {"ef": 40}
