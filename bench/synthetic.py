"""Synthetic catalogs for scale benches: clustered unit vectors (CLIP 512-d, caption 384-d) and captions
recombined from the real sample catalog's captions, so BM25 sees a realistic vocabulary and length.

The rows themselves (`synthetic_rows`) import nothing from rag/, so a bench can also write them through an
older checkout of the code (bench/store_scale.py does, for the before/after figures); `synthetic_records`
wraps them as rag.channels.IndexItem for today's store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

CATEGORIES = ("street", "animal", "food", "indoor", "sports", "vehicle", "nature", "people")


def _basis(rng: np.random.Generator, n: int, dim: int, per_cluster: int) -> tuple[np.ndarray, np.ndarray]:
    mean = rng.standard_normal(dim).astype(np.float32)
    mean /= np.linalg.norm(mean)
    centres = rng.standard_normal((max(1, n // per_cluster), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return mean, centres


def clustered_vectors(n: int, dim: int, *, seed: int, per_cluster: int = 100, spread: float = 0.6,
                      common: float = 0.6) -> np.ndarray:
    """Embedding-like unit vectors: n/per_cluster "concepts" around a shared mean direction (CLIP-style
    anisotropy). Defaults give nearest-neighbour cosine ~0.81 and median pairwise cosine ~0.21.
    I.i.d. Gaussian vectors (uniform_vectors) have no such structure: the worst case for any ANN index."""
    rng = np.random.default_rng(seed)
    mean, centres = _basis(rng, n, dim, per_cluster)
    noise = rng.standard_normal((n, dim)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vectors = common * mean + centres[rng.integers(0, len(centres), n)] + spread * noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def near_centre_queries(n: int, dim: int, m: int, *, seed: int, query_seed: int = 12345, per_cluster: int = 100,
                        spread: float = 0.6, common: float = 0.6) -> np.ndarray:
    """m query vectors drawn like new catalog points of `clustered_vectors(n, dim, seed=seed)`: a random
    cluster centre of that catalog plus noise (the basis is re-derived from the seed, not from the n vectors)."""
    mean, centres = _basis(np.random.default_rng(seed), n, dim, per_cluster)
    rng = np.random.default_rng(query_seed)
    noise = rng.standard_normal((m, dim)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vectors = common * mean + centres[rng.integers(0, len(centres), m)] + spread * noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def uniform_vectors(n: int, dim: int, *, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def real_captions(metadata: Path) -> list[str]:
    captions = []
    for line in metadata.read_text().splitlines():
        if line.strip():
            captions.extend(c for c in json.loads(line).get("captions", []) if c)
    return captions


@dataclass(frozen=True)
class SyntheticRow:
    id: str
    path: str
    caption: str
    metadata: dict[str, Any] = field(default_factory=dict)


def synthetic_rows(n: int, captions: list[str], *, seed: int = 0) -> Iterator[SyntheticRow]:
    """n rows: a real caption plus 0-3 words from the catalog vocabulary, a category, a sha256-like id."""
    rng = np.random.default_rng(seed)
    vocab = sorted({w for c in captions for w in c.lower().split() if w.isalpha()})
    for i in range(n):
        extra = " ".join(vocab[j] for j in rng.integers(0, len(vocab), int(rng.integers(0, 4))))
        caption = f"{captions[int(rng.integers(0, len(captions)))]} {extra}".strip()
        yield SyntheticRow(
            id=hashlib.sha256(f"synthetic-{seed}-{i}".encode()).hexdigest(),
            path=f"/synthetic/{i:07d}.jpg",
            caption=caption,
            metadata={"category": CATEGORIES[i % len(CATEGORIES)], "source": "synthetic"},
        )


def synthetic_records(n: int, captions: list[str], *, seed: int = 0) -> Iterator[Any]:
    """The same rows as rag.channels.IndexItem (no image: the store never reads it; vectors are passed apart)."""
    from rag.channels import IndexItem

    for row in synthetic_rows(n, captions, seed=seed):
        yield IndexItem(id=row.id, path=row.path, image=None, caption=row.caption,
                        sources={"metadata": row.caption}, metadata=dict(row.metadata))
