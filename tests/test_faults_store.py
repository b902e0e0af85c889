"""Issue 10 fault cases on the store side, through index_folder / the CLI: a changed file replaces its row, a
failed VLM caption leaves the row pending (retried and filled in by the next run), --strict, concurrent runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_vlm_server import FakeVLMServer, Reply
from PIL import Image

from conftest import REPO
from ingest.pipeline import index_folder
from rag.config import Settings
from rag.hashing import file_sha256
from rag.search import SearchEngine
from rag.store import CatalogStore

pytestmark = pytest.mark.slow
GOOD = "A red bus on a wet street."


def _pictures(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"picture_{i}.png"
        Image.new("RGB", (40 + i, 30), (40 * i % 255, 90, 200)).save(path)
        paths.append(path)
    return paths


def test_changed_file_at_a_known_path_replaces_its_old_row(tmp_path, text_model) -> None:
    paths = _pictures(tmp_path / "imgs", 4)
    settings = Settings(data_dir=tmp_path / "d", clip_model=None)
    index_folder(tmp_path / "imgs", settings, show_progress=False, text_embedder=text_model)
    old = file_sha256(paths[1])
    Image.new("RGB", (64, 64), "orange").save(paths[1])  # same path, new content
    again = index_folder(tmp_path / "imgs", settings, show_progress=False, text_embedder=text_model)
    assert (again.indexed, again.already_indexed, again.total_in_store) == (1, 3, 4)
    with CatalogStore.open(settings) as store:
        ids = store.ids()
        assert old not in ids and file_sha256(paths[1]) in ids and store.count() == 4
        assert sorted(row["path"] for row in store.fetch(sorted(ids)).values()) == sorted(str(p.resolve()) for p in paths)


def test_failed_vlm_caption_is_indexed_pending_then_filled_in_by_the_next_run(tmp_path, text_model) -> None:
    _pictures(tmp_path / "imgs", 3)
    settings = Settings(data_dir=tmp_path / "d", clip_model=None, vlm_model="fake-vlm", vlm_timeout_s=5)
    with FakeVLMServer([Reply(body='{"error": "model loading"}'), GOOD, GOOD]) as srv:
        first = index_folder(tmp_path / "imgs", settings.with_(vlm_base_url=srv.base_url), vlm_captions=True,
                             show_progress=False, text_embedder=text_model)
    assert first.indexed == 3 and first.total_in_store == 3
    assert [Path(p).name for p, _ in first.pending] == ["picture_0.png"] and "model loading" in first.pending[0][1]
    with CatalogStore.open(settings) as store:
        assert [Path(r["path"]).name for r in store.pending()] == ["picture_0.png"]
    # A run without the VLM leaves it pending; a run with it fills it in, in place.
    plain = index_folder(tmp_path / "imgs", settings, show_progress=False, text_embedder=text_model)
    assert (plain.indexed, plain.recaptioned, plain.already_indexed) == (0, 0, 3)
    with FakeVLMServer(["A green parrot on a branch."]) as srv:
        second = index_folder(tmp_path / "imgs", settings.with_(vlm_base_url=srv.base_url), vlm_captions=True,
                              show_progress=False, text_embedder=text_model)
        assert len(srv.chat_requests) == 1  # only the pending image is asked again
    assert (second.indexed, second.recaptioned, second.already_indexed, second.pending) == (0, 1, 2, [])
    with CatalogStore.open(settings) as store:
        assert store.pending() == [] and store.count() == 3
        with SearchEngine(settings, store, _encoders(text_model)) as engine:
            top = engine.search("green parrot", mode="bm25", k=1).results[0]
            assert Path(top.path).name == "picture_0.png" and "parrot" in top.caption


def _encoders(text_model):
    from rag.encoders import Encoders

    return Encoders(None, text_model)


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mmrag.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "MMRAG_URI": "", **(env or {})})


def test_strict_exits_non_zero_when_a_caption_is_left_pending(tmp_path) -> None:
    _pictures(tmp_path / "imgs", 2)
    with FakeVLMServer([Reply(body="<html>Bad Gateway</html>"), GOOD]) as srv:
        env = {"MMRAG_VLM_BASE_URL": srv.base_url, "MMRAG_VLM_MODEL": "fake-vlm"}
        proc = _cli("index", str(tmp_path / "imgs"), "--captioner", "vlm", "--clip-model", "none", "--strict",
                    "--quiet", "--json", "--data-dir", str(tmp_path / "d"), env=env)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err
    report = json.loads(out)
    assert report["indexed"] == 2 and len(report["pending"]) == 1 and "Bad Gateway" in report["pending"][0][1]


def test_two_index_runs_at_once_the_loser_says_in_use(tmp_path) -> None:
    _pictures(tmp_path / "imgs", 6)
    args = ("index", str(tmp_path / "imgs"), "--clip-model", "none", "--quiet", "--data-dir", str(tmp_path / "d"))
    runs = [_cli(*args), _cli(*args)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    for code, err in results:
        assert "Open local milvus failed" not in err and "Traceback" not in err
        assert code == 0 or (code == 2 and "in use by another process" in err), err
    assert any(code == 0 for code, _ in results)
    with CatalogStore.open(Settings(data_dir=tmp_path / "d", clip_model=None)) as store:
        assert store.count() == 6 == len(store.ids())
