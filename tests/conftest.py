"""Shared fixtures: real sample data, the random-weight ViT-B/32 CLIP folder, and a network guard."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from rag.config import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data_dir()
RETRIEVAL = SHARED_DATA / "retrieval"
INSPECTION = SHARED_DATA / "inspection"

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


def require_retrieval_data() -> Path:
    if not (RETRIEVAL / "metadata.jsonl").exists():
        pytest.skip(f"sample catalog not found at {RETRIEVAL} (set MMRAG_SHARED_DATA)")
    return RETRIEVAL


@pytest.fixture(scope="session")
def retrieval_data() -> Path:
    return require_retrieval_data()


@pytest.fixture(scope="session")
def retrieval_rows(retrieval_data: Path) -> list[dict]:
    return [json.loads(line) for line in (retrieval_data / "metadata.jsonl").read_text().splitlines() if line.strip()]


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


def copy_sample(rows: list[dict], retrieval: Path, dest: Path, n: int, step: int = 1) -> Path:
    """Copy n sample images (every step-th) into dest/images with a matching metadata.jsonl."""
    images = dest / "images"
    images.mkdir(parents=True, exist_ok=True)
    chosen = rows[::step][:n]
    for row in chosen:
        shutil.copy(retrieval / row["file"], images / Path(row["file"]).name)
    (dest / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return images
