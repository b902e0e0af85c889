"""Server mode: index and search through a `milvus-lite server` on 127.0.0.1 (the Milvus gRPC protocol a
docker-compose Milvus speaks) while a second process reads; nothing may be lost, and it all persists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from conftest import REPO, copy_sample
from rag.config import Settings
from rag.dev.milvus_server import MilvusLiteServer, free_port, wait_ready
from rag.errors import StoreUnavailableError
from rag.hashing import file_sha256

pytestmark = pytest.mark.slow

N_IMAGES = 96  # from the full sample set; examples/catalog (a bare clone) gives all its 40

READER = textwrap.dedent(
    """
    import json, sys, time
    from pymilvus import MilvusClient
    uri, collection, expected, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    client = MilvusClient(uri=uri, timeout=10)
    client.list_collections()
    open(out + ".ready", "w").close()  # the indexer starts only once this reader is connected
    seen, errors, deadline = [], [], time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if collection in client.list_collections():
                seen.append(client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"])
                if seen[-1] >= expected:
                    break
        except Exception as exc:  # a reader must never see the server fail mid-index
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
        time.sleep(0.05)
    ids = sorted(r["id"] for r in client.query(collection, filter="", output_fields=["id"], limit=16384))
    json.dump({"seen": seen, "errors": errors, "ids": ids}, open(out, "w"))
    """
)


@pytest.fixture(scope="module")
def served(tmp_path_factory, retrieval_data, retrieval_rows, text_model):
    """Index N_IMAGES sample photos caption-side through the server while a reader process polls it."""
    from ingest.pipeline import index_folder

    root = tmp_path_factory.mktemp("served")
    images = copy_sample(retrieval_rows, retrieval_data, root, N_IMAGES, step=5)
    n = len(list(images.iterdir()))
    server = MilvusLiteServer(root / "milvus.db").start()
    settings = Settings(data_dir=root / "data", uri=server.uri, clip_model=None, batch_size=8)
    reader_out = root / "reader.json"
    reader = subprocess.Popen([sys.executable, "-c", READER, server.uri, f"{settings.collection_prefix}_catalog",
                               str(n), str(reader_out)])
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{reader_out}.ready").exists():
            assert reader.poll() is None and time.monotonic() < deadline, "reader process did not start"
            time.sleep(0.1)
        report = index_folder(images, settings, metadata=root / "metadata.jsonl", show_progress=False,
                              text_embedder=text_model)
        assert reader.wait(timeout=240) == 0
        yield {"root": root, "images": images, "server": server, "settings": settings, "report": report,
               "reader": json.loads(reader_out.read_text()), "n": n}
    finally:
        if reader.poll() is None:
            reader.kill()
        server.stop()


def test_index_through_server_loses_nothing(served):
    report, settings = served["report"], served["settings"]
    expected = {file_sha256(p) for p in served["images"].iterdir()}
    assert len(expected) == served["n"]
    assert report.indexed == served["n"] and report.total_in_store == served["n"] and not report.bad_files
    client = MilvusClient(uri=served["server"].uri)
    try:
        rows = client.query(f"{settings.collection_prefix}_catalog", filter="", output_fields=["id"], limit=16384)
        assert sorted(r["id"] for r in rows) == sorted(expected)  # every image exactly once
        assert client.query(f"{settings.collection_prefix}_catalog", filter="", output_fields=["count(*)"])[0]["count(*)"] == served["n"]
    finally:
        client.close()


def test_second_process_read_while_indexing(served):
    """The reader saw the collection grow batch by batch (never shrink, never fail) and ended with every id."""
    reader = served["reader"]
    assert reader["errors"] == []
    seen = reader["seen"]
    assert seen and seen[-1] == served["n"]
    assert all(a <= b for a, b in zip(seen, seen[1:])), seen
    assert len(set(seen)) >= 2, f"the reader never observed indexing in progress: {seen}"
    assert len(reader["ids"]) == served["n"]


def test_cli_searches_through_the_server_in_another_process(served):
    settings = served["settings"]
    rows = [json.loads(l) for l in (served["root"] / "metadata.jsonl").read_text().splitlines()]
    caption = rows[3]["captions"][0]
    target = file_sha256(served["images"] / Path(rows[3]["file"]).name)
    env = {**os.environ, "MMRAG_DATA_DIR": str(settings.data_dir)}
    out = subprocess.run(
        [sys.executable, "-m", "mmrag.cli", "search", caption, "--uri", settings.uri, "--mode", "bm25", "-k", "5",
         "--json", "--clip-model", "none"],
        capture_output=True, text=True, timeout=240, cwd=REPO, env=env,
    )
    assert out.returncode == 0, out.stderr
    response = json.loads(out.stdout)
    assert response["mode"] == "bm25" and response["results"]
    assert target in [r["id"] for r in response["results"][:3]]


def test_native_fusion_over_the_server_matches_client_fusion(served, text_model):
    from rag.search import SearchEngine

    settings = served["settings"]
    with SearchEngine.open(settings, text_embedder=text_model) as engine:
        for query in ("a dog on a couch", "people riding bicycles", "a plate of food", "red bus"):
            fused = [r.id for r in engine.search(query, mode="hybrid", k=10, fusion="client").results]
            assert [r.id for r in engine.search(query, mode="hybrid", k=10, fusion="native").results] == fused, query


def test_data_persists_across_a_server_restart_and_reopens_embedded(served):
    """Stop the server (clean SIGINT), serve the same folder on a new port, then open it embedded."""
    server, settings = served["server"], served["settings"]
    data_dir = server.data_dir
    assert server.stop() == 0
    collection = f"{settings.collection_prefix}_catalog"
    with MilvusLiteServer(data_dir) as again:
        client = MilvusClient(uri=again.uri)
        client.load_collection(collection)
        assert client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"] == served["n"]
        client.close()
    embedded = MilvusClient(str(data_dir))  # the lock is released once the server is gone
    try:
        embedded.load_collection(collection)
        assert embedded.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"] == served["n"]
    finally:
        embedded.close()


def test_server_helper_lifecycle(tmp_path):
    server = MilvusLiteServer(tmp_path / "x.db")
    with pytest.raises(StoreUnavailableError, match="not started"):
        server.uri
    with server:
        assert server.running and server.uri.startswith("http://127.0.0.1:")
        port = server.port
        # The folder is locked by the server: a second server on it fails with the log's reason.
        with pytest.raises(StoreUnavailableError, match="exited"):
            MilvusLiteServer(tmp_path / "x.db", startup_timeout_s=20).start()
    assert not server.running
    # No listener holds the port after a clean stop (SO_REUSEADDR: closed connections may linger in TIME_WAIT).
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_wait_ready_fails_fast_on_a_dead_port():
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="did not answer"):
        wait_ready(f"http://127.0.0.1:{free_port()}", timeout_s=1.5)
    assert time.monotonic() - started < 10
