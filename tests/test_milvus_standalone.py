"""A real Milvus server (PyPI `milvus` 2.3.5, the C++ standalone) driven through the mmrag CLI with --uri.

The server binds every interface, so the whole scenario runs in a network namespace of its own
(tests/milvus_standalone_scenario.py via run_in_netns); where none can be made the tests skip with the reason.
One scenario run, several assertions: index, crash mid-index (SIGKILL) and resume, one-line errors while the
server is down, text and image search.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA
from rag.dev.milvus_standalone import netns_available, run_in_netns

pytestmark = pytest.mark.slow

SCENARIO = Path(__file__).with_name("milvus_standalone_scenario.py")
TIMEOUT_S = 600


def _catalog() -> Path | None:
    for candidate in (SHARED_DATA / "retrieval", REPO / "examples" / "catalog"):
        if (candidate / "metadata.jsonl").exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, random_clip_dir) -> dict:
    if importlib.util.find_spec("milvus") is None:
        pytest.skip("the `milvus` package (Milvus 2.3.5 standalone) is not installed: pip install milvus==2.3.5")
    ok, reason = netns_available()
    if not ok:
        pytest.skip(f"cannot make a private network namespace for the Milvus server: {reason}")
    catalog = _catalog()
    if catalog is None:
        pytest.skip(f"no sample catalog at {SHARED_DATA / 'retrieval'} or examples/catalog (set MMRAG_SHARED_DATA)")
    work = tmp_path_factory.mktemp("standalone")
    proc = run_in_netns([sys.executable, str(SCENARIO), "--work", str(work), "--catalog", str(catalog),
                         "--clip-model", str(random_clip_dir), "--bin-cache", str(REPO / ".cache" / "milvus-2.3.5")],
                        timeout=TIMEOUT_S, cwd=REPO)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, f"scenario failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    result = json.loads(lines[-1])
    print(f"\nMilvus standalone scenario: {result.get('total_s')} s, server {result.get('server_version')}")
    return result


def _one_readable_line(observed: dict) -> None:
    lines = observed["stderr_lines"]
    assert observed["rc"] not in (0, None), observed
    assert not observed["traceback"], "a traceback reached the user:\n" + "\n".join(lines[-30:])
    assert len(lines) == 1 and lines[0].startswith("mmrag: error:"), lines
    assert "127.0.0.1" in lines[0], lines  # it names the server it could not reach


def test_server_is_a_real_milvus_23_on_loopback(scenario):
    assert scenario["server_version"].startswith("v2.3.")
    assert scenario["start1"]["ready_line"] == "READY http://127.0.0.1:19530"
    assert scenario["stop_rc"] == 0  # SIGTERM stops it cleanly


def test_crash_mid_index_then_resume_stores_every_image_exactly_once(scenario):
    n = scenario["n_images"]
    at_kill = scenario["counts_at_kill"]
    assert at_kill and not scenario["run1_finished_before_kill"], "the kill did not land mid-index"
    assert all(0 < rows < n for rows in at_kill.values()), at_kill
    # What was written before the SIGKILL is there after the restart, before any resume.
    assert all(scenario["counts_after_restart"].get(name, 0) >= rows for name, rows in at_kill.items()), scenario
    run2 = scenario["run2"]
    assert run2["rc"] == 0, run2
    assert run2["report"]["indexed"] + run2["report"]["already_indexed"] == n, run2["report"]
    assert run2["report"]["already_indexed"] >= min(at_kill.values()), run2["report"]
    expected_paths = Counter(scenario["image_paths"])
    assert scenario["rows"], "no collection of the catalog found"
    for name, rows in scenario["rows"].items():
        assert rows["rows"] == n, (name, rows["rows"])
        assert set(rows["ids"].values()) == {1} and len(rows["ids"]) == n, (name, "ids not unique")
        assert Counter(rows["paths"]) == expected_paths, (name, "paths not exactly once each")


def test_killed_index_run_fails_with_one_readable_line(scenario):
    assert not scenario["run1"].get("hung"), "the index run hung after the server died"
    _one_readable_line(scenario["run1"])


def test_search_while_server_down_is_one_readable_line(scenario):
    _one_readable_line(scenario["search_down"])
    assert scenario["search_down"]["stdout"] == ""


def test_text_search_finds_the_captioned_images(scenario):
    search = scenario["search_text"]
    assert search["rc"] == 0, search["stderr_tail"]
    results = search["json"]["results"]
    paths = [r["path"] for r in results]
    giraffes = set(scenario["word_paths"])
    assert giraffes, "the sample has no giraffe captions"
    assert paths[0] in giraffes, paths[:3]
    assert giraffes <= set(paths), (sorted(giraffes - set(paths)), paths)
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
    # Real MiniLM + BM25 over captions: the caption-text channels rank the giraffes, whatever random CLIP says.
    assert results[0]["ranks"]["bm25"] is not None and results[0]["ranks"]["caption"] is not None


def test_image_search_finds_the_same_picture(scenario):
    search = scenario["search_image"]
    assert search["rc"] == 0, search["stderr_tail"]
    results = search["json"]["results"]
    # A lossless PNG copy has the JPEG's pixels: the same CLIP vector, so the original is the top hit.
    assert results[0]["path"] == scenario["image_query_original"], [r["path"] for r in results[:3]]
    assert results[0]["ranks"]["clip"] == 1


def test_standalone_refuses_to_start_on_a_shared_network(tmp_path):
    from rag.dev.milvus_standalone import MilvusStandalone, isolation_problem
    from rag.errors import StoreUnavailableError

    if isolation_problem() is None:
        pytest.skip("this test process already sits in a private network namespace")
    with pytest.raises(StoreUnavailableError, match="network namespace"):
        MilvusStandalone(tmp_path / "m").start()
    assert not (tmp_path / "m").exists()  # refused before touching anything


def test_run_in_netns_sees_only_loopback():
    ok, reason = netns_available()
    if not ok:
        pytest.skip(f"cannot make a private network namespace: {reason}")
    probe = "from rag.dev.milvus_standalone import isolation_problem, netns_interfaces as n; print(n(), isolation_problem())"
    proc = run_in_netns([sys.executable, "-c", probe], timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['lo']", "None"]
