"""Settings: one dataclass, filled from defaults, then MMRAG_* environment variables, then CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
RETRIEVERS = ("clip", "caption", "bm25")
MODES = ("clip", "caption", "bm25", "hybrid")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def shared_data_dir() -> Path:
    """The shared sample data (retrieval/, inspection/): $MMRAG_SHARED_DATA, else ../shared/data beside the repo."""
    return Path(_env("MMRAG_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data").resolve()


def parse_weights(text: str) -> dict[str, float]:
    """Parse 'clip=0.5,caption=1,bm25=1' into a weight per retriever."""
    weights = {name: 1.0 for name in RETRIEVERS}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in weights or not value:
            raise ValueError(f"bad fusion weight {part!r}: expected NAME=NUMBER with NAME in {RETRIEVERS}")
        weights[key] = float(value)
    return weights


@dataclass(frozen=True)
class Settings:
    """Everything that selects models, store and endpoints.

    data_dir holds the embedded Milvus Lite folder and the caption/OCR/VLM caches.
    uri is a Milvus Lite path ending in .db (a folder) or a server URL (http://host:19530).
    clip_model None means caption-side only (no image vectors).
    """

    data_dir: Path = Path("mmrag_data")
    uri: str | None = None
    token: str = ""
    collection_prefix: str = "mmrag"
    clip_model: str | None = DEFAULT_CLIP_MODEL
    text_model: str = DEFAULT_TEXT_MODEL
    vlm_base_url: str | None = None
    vlm_model: str | None = None
    vlm_api_key: str | None = None
    vlm_timeout_s: float = 60.0
    fusion_weights: dict[str, float] = field(default_factory=lambda: {n: 1.0 for n in RETRIEVERS})
    rrf_k: float = 60.0
    batch_size: int = 32

    @property
    def store_uri(self) -> str:
        return self.uri or str(self.data_dir / "milvus.db")

    @property
    def is_embedded(self) -> bool:
        return not self.store_uri.startswith(("http://", "https://", "tcp://", "unix:"))

    @property
    def cache_path(self) -> Path:
        return self.data_dir / "cache.sqlite"

    @property
    def image_collection(self) -> str:
        return f"{self.collection_prefix}_image"

    @property
    def caption_collection(self) -> str:
        return f"{self.collection_prefix}_caption"

    def with_(self, **changes: object) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls) -> "Settings":
        clip = _env("MMRAG_CLIP_MODEL", DEFAULT_CLIP_MODEL)
        weights = _env("MMRAG_FUSION_WEIGHTS")
        return cls(
            data_dir=Path(_env("MMRAG_DATA_DIR", "mmrag_data")),
            uri=_env("MMRAG_URI"),
            token=_env("MMRAG_TOKEN", "") or "",
            collection_prefix=_env("MMRAG_COLLECTION_PREFIX", "mmrag") or "mmrag",
            clip_model=None if (clip or "").lower() == "none" else clip,
            text_model=_env("MMRAG_TEXT_MODEL", DEFAULT_TEXT_MODEL) or DEFAULT_TEXT_MODEL,
            vlm_base_url=_env("MMRAG_VLM_BASE_URL", _env("OPENAI_BASE_URL")),
            vlm_model=_env("MMRAG_VLM_MODEL"),
            vlm_api_key=_env("MMRAG_VLM_API_KEY", _env("OPENAI_API_KEY")),
            vlm_timeout_s=float(_env("MMRAG_VLM_TIMEOUT_S", "60") or 60),
            fusion_weights=parse_weights(weights) if weights else {n: 1.0 for n in RETRIEVERS},
        )
