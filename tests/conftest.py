"""Shared fixtures: real sample data, the random-weight ViT-B/32 CLIP folder, and a network guard.

Real photos come from the full shared sample set (../shared/data/retrieval, 567 photos; CI has it) or, where it
is missing (a bare clone), from examples/catalog (40 license-clean photos committed in the repo).
Tests that need the full set itself (its counts, gold queries, giraffes) use the full_* fixtures and skip without it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rag.config import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data_dir()
RETRIEVAL = SHARED_DATA / "retrieval"
INSPECTION = SHARED_DATA / "inspection"
EXAMPLE_CATALOG = REPO / "examples" / "catalog"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # subprocesses inherit it; nothing may reach a hub from tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    host = str(address[0]) if isinstance(address, tuple) else ""
    return host in ("localhost", "::1", "0.0.0.0") or host.startswith("127.")


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_local(address):
        raise ConnectionRefusedError(f"tests must not reach the network: connect to {address!r} blocked")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if not _is_local(address):
        raise ConnectionRefusedError(f"tests must not reach the network: connect to {address!r} blocked")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def no_network() -> None:
    """Any connection beyond loopback fails loudly for the whole test session."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


def read_rows(catalog: Path) -> list[dict]:
    return [json.loads(line) for line in (catalog / "metadata.jsonl").read_text().splitlines() if line.strip()]


def require_retrieval_data() -> Path:
    """The full shared sample set, or skip: for tests that depend on its exact content."""
    if not (RETRIEVAL / "metadata.jsonl").exists():
        pytest.skip(f"needs the full sample set, not found at {RETRIEVAL} (set MMRAG_SHARED_DATA)")
    return RETRIEVAL


def real_catalog() -> Path:
    """A real photo catalog: the full shared sample set when present, else the repo's examples/catalog."""
    return RETRIEVAL if (RETRIEVAL / "metadata.jsonl").exists() else EXAMPLE_CATALOG


@pytest.fixture(scope="session")
def retrieval_data() -> Path:
    return real_catalog()


@pytest.fixture(scope="session")
def retrieval_rows(retrieval_data: Path) -> list[dict]:
    return read_rows(retrieval_data)


@pytest.fixture(scope="session")
def full_retrieval_data() -> Path:
    return require_retrieval_data()


@pytest.fixture(scope="session")
def full_retrieval_rows(full_retrieval_data: Path) -> list[dict]:
    return read_rows(full_retrieval_data)


@pytest.fixture(scope="session")
def random_clip_dir() -> Path:
    """The real ViT-B/32 CLIP architecture with random weights, as an HF folder (cached across runs)."""
    from rag.dev.random_clip import build_random_clip

    return build_random_clip(REPO / ".cache" / "random-clip-vit-b32")


@pytest.fixture(scope="session")
def clip_model(random_clip_dir: Path):
    from rag.clip_embedding import ClipEmbedding

    return ClipEmbedding.from_pretrained(str(random_clip_dir), batch_size=16)


@pytest.fixture(scope="session")
def text_model():
    from rag.text_embedding import make_text_embedder

    return make_text_embedder("all-MiniLM-L6-v2")


def pick_sample(rows: list[dict], n: int, step: int = 1) -> list[dict]:
    """n rows, every step-th; where the catalog is too small for that (examples/catalog), up to n spread evenly."""
    picked = rows[::step][:n]
    if len(picked) < n and len(rows) > len(picked):
        m = min(n, len(rows))
        picked = [rows[i * len(rows) // m] for i in range(m)]
    return picked


def copy_sample(rows: list[dict], retrieval: Path, dest: Path, n: int, step: int = 1) -> Path:
    """Copy pick_sample(rows, n, step) into dest/images with a matching metadata.jsonl."""
    images = dest / "images"
    images.mkdir(parents=True, exist_ok=True)
    chosen = pick_sample(rows, n, step)
    for row in chosen:
        shutil.copy(retrieval / row["file"], images / Path(row["file"]).name)
    (dest / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return images


def run_mmrag(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`mmrag ARGS` in a subprocess as a user runs it (offline, no store or weights from the environment)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMRAG_DATA_DIR": "", "MMRAG_URI": "", "MMRAG_FUSION_WEIGHTS": ""}
    return subprocess.run([sys.executable, "-m", "mmrag.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def example_index(tmp_path_factory) -> Path:
    """examples/catalog indexed caption-side through the CLI, once per test session."""
    data = tmp_path_factory.mktemp("example-index") / "data"
    out = run_mmrag("index", str(EXAMPLE_CATALOG / "images"), "--metadata", str(EXAMPLE_CATALOG / "metadata.jsonl"),
                    "--clip-model", "none", "--data-dir", str(data), "--quiet", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["indexed"] == 40 and report["channels"] == ["caption", "bm25", "ocr"]
    return data


@pytest.fixture(scope="session")
def caption_sample24(tmp_path_factory, retrieval_data, retrieval_rows, text_model):
    """24 real sample photos (every 23rd row) indexed caption side only (MiniLM + BM25), with their catalog
    captions: (settings, the rows indexed)."""
    from ingest.pipeline import index_folder
    from rag.config import Settings

    root = tmp_path_factory.mktemp("caption-sample24")
    images = copy_sample(retrieval_rows, retrieval_data, root, 24, step=23)
    settings = Settings(data_dir=root / "data", clip_model=None)
    report = index_folder(images, settings, metadata=root / "metadata.jsonl", show_progress=False, text_embedder=text_model)
    assert report.total_in_store == 24
    return settings, pick_sample(retrieval_rows, 24, 23)


APP = REPO / "app_streamlit.py"


def start_app():
    """app_streamlit.py run once under Streamlit's AppTest, failing on any exception it shows."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at
