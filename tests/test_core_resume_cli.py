"""The CLI as a user runs it: a killed index run resumes without loss or duplicates; errors are one line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, copy_sample
from rag.config import Settings
from rag.errors import StoreUnavailableError
from rag.store import CatalogStore

pytestmark = pytest.mark.slow


def mmrag(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMRAG_DATA_DIR": "", "MMRAG_URI": ""}
    return subprocess.run([sys.executable, "-m", "mmrag.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _counts(data_dir: Path) -> tuple[int, int]:
    """(rows, distinct ids) in the catalog; (0, 0) before the first batch created it."""
    try:
        store = CatalogStore.open(Settings(data_dir=data_dir, clip_model=None))
    except StoreUnavailableError:
        return 0, 0
    with store:
        return store.count(), len(store.ids())


def test_killed_index_run_resumes_with_every_image_exactly_once(tmp_path, retrieval_data, retrieval_rows) -> None:
    images = copy_sample(retrieval_rows, retrieval_data, tmp_path, 80, step=7)
    n = len(list(images.iterdir()))  # 80 from the full sample set, 40 from examples/catalog
    data = tmp_path / "data"
    args = [sys.executable, "-m", "mmrag.cli", "index", str(images), "--metadata", str(tmp_path / "metadata.jsonl"),
            "--clip-model", "none", "--batch-size", "4", "--data-dir", str(data)]
    proc = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    done = threading.Event()
    progress = {"n": 0}

    def watch() -> None:
        buffer = b""
        while chunk := proc.stderr.read1(256):  # type: ignore[union-attr]
            buffer = (buffer + chunk)[-400:]
            found = re.findall(rb"indexing:.*?\| *(\d+)/%d" % n, buffer)
            if found:
                progress["n"] = int(found[-1])
                if progress["n"] >= 12:
                    done.set()
                    return

    threading.Thread(target=watch, daemon=True).start()
    assert done.wait(240), f"index run never got going (progress {progress})"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    rows, distinct = _counts(data)
    assert 12 <= distinct < n, "the run must have been killed part-way"
    assert rows == distinct

    second = mmrag("index", str(images), "--metadata", str(tmp_path / "metadata.jsonl"), "--clip-model", "none",
                   "--data-dir", str(data), "--json", "--quiet")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["already_indexed"] == distinct and report["indexed"] == n - distinct
    assert _counts(data) == (n, n)


def test_default_clip_without_weights_fails_in_one_line(tmp_path, retrieval_data) -> None:
    result = mmrag("index", str(retrieval_data / "images"), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmrag: error: cannot load CLIP model 'openai/clip-vit-base-patch32'")
    assert "--clip-model" in lines[0] and "Traceback" not in result.stderr


def test_clip_optional_carries_on_caption_side_and_search_works(tmp_path, retrieval_data, retrieval_rows) -> None:
    images = copy_sample(retrieval_rows, retrieval_data, tmp_path, 10, step=30)
    data = str(tmp_path / "d")
    result = mmrag("index", str(images), "--metadata", str(tmp_path / "metadata.jsonl"), "--clip-optional",
                   "--data-dir", data, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "no CLIP weights" in result.stderr and "caption-side only" in result.stdout
    found = mmrag("search", "a photo", "--data-dir", data, "--json", "-k", "3")
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)["results"]) == 3
    clip_mode = mmrag("search", "a photo", "--data-dir", data, "--mode", "clip")
    assert clip_mode.returncode == 2 and "needs a CLIP model" in clip_mode.stderr


def test_unreachable_milvus_server_is_one_line(tmp_path) -> None:
    result = mmrag("search", "x", "--uri", "http://127.0.0.1:9", "--clip-model", "none", timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("mmrag: error: cannot use Milvus at http://127.0.0.1:9")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_input_errors(tmp_path) -> None:
    missing = mmrag("index", str(tmp_path / "nope"), "--clip-model", "none", "--data-dir", str(tmp_path / "d"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    no_index = mmrag("search", "x", "--data-dir", str(tmp_path / "empty"))
    assert no_index.returncode == 2 and "run `mmrag index PATH` first" in no_index.stderr
    bad_filter = mmrag("search", "x", "--filter", "novalue", "--data-dir", str(tmp_path / "empty"))
    assert bad_filter.returncode == 2 and "expected KEY=VALUE" in bad_filter.stderr
