"""Settings: one dataclass, filled from defaults, then MMRAG_* environment variables, then CLI flags.

This is the only module that reads the environment (rag/dev/ tooling aside); everything else takes a Settings.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from rag.errors import MmragError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
# Per-channel "no good match" thresholds, fitted by `python -m eval.match_calibration` (never edited by hand).
DEFAULT_MATCH_THRESHOLDS = REPO_ROOT / "rag" / "match_thresholds.json"
FUSIONS = ("client", "native")
# Index-type overrides: environment variable -> (index_params key, type). Applied when a collection is created.
INDEX_OVERRIDES = {
    "MMRAG_INDEX_TYPE": ("index_type", str),
    "MMRAG_HNSW_M": ("M", int),
    "MMRAG_HNSW_EF_CONSTRUCTION": ("efConstruction", int),
    "MMRAG_HNSW_EF": ("ef", int),
    "MMRAG_IVF_NLIST": ("nlist", int),
    "MMRAG_IVF_NPROBE": ("nprobe", int),
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _env(name: str, default: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    return value if value not in (None, "") else default


def shared_data_dir() -> Path:
    """The shared sample data (retrieval/, inspection/): $MMRAG_SHARED_DATA, else ../shared/data beside the repo."""
    return Path(_env("MMRAG_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data").resolve()


def env_flag(name: str, default: bool = False) -> bool:
    raw = (_env(name) or "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return default if raw == "" else False
    raise MmragError(f"{name}={raw!r}: expected 1/0, true/false, yes/no or on/off")


def env_value(name: str, default: str | None = None) -> str | None:
    """One MMRAG_* value for entry points (the app, the launcher) that have no Settings field for it."""
    return _env(name, default)


def parse_weights(text: str, names: tuple[str, ...] | None = None) -> dict[str, float]:
    """Parse 'clip=0.5,caption=1,bm25=1' into a weight per channel.

    Weights are finite and >= 0 (0 drops a channel); names, when given, are the known channels.
    """
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not key or not value:
            raise MmragError(f"bad fusion weight {part!r}: expected NAME=NUMBER, e.g. clip=1,caption=1,bm25=0.5")
        if names is not None and key not in names:
            raise MmragError(f"unknown channel {key!r} in weights: channels are {', '.join(names)}")
        try:
            number = float(value)
        except ValueError:
            raise MmragError(f"fusion weight {key}={value!r} is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise MmragError(f"fusion weight {key}={value} must be a finite number >= 0 (0 drops the channel)")
        weights[key] = number
    return weights


def check_weights(weights: Mapping[str, float], active: list[str]) -> None:
    """At least one of the channels a query will use must have a weight above 0."""
    for key, number in weights.items():
        if not isinstance(number, (int, float)) or not math.isfinite(number) or number < 0:
            raise MmragError(f"fusion weight {key}={number!r} must be a finite number >= 0")
    if active and not any(weights.get(name, 1.0) > 0 for name in active):
        raise MmragError(f"every channel this query uses ({', '.join(active)}) has weight 0: give at least one a weight above 0")


def index_overrides_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """MMRAG_INDEX_TYPE / MMRAG_HNSW_* / MMRAG_IVF_* as index_params overrides."""
    out: dict[str, Any] = {}
    for name, (key, kind) in INDEX_OVERRIDES.items():
        raw = _env(name, environ=environ)
        if raw is None:
            continue
        try:
            out[key] = kind(raw.strip())
        except ValueError:
            raise MmragError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    return out


@dataclass(frozen=True)
class Settings:
    """Everything that selects models, store, fusion and endpoints.

    data_dir holds the embedded Milvus Lite folder and the caption/OCR/VLM caches.
    uri is a Milvus Lite path ending in .db (a folder) or a server URL (http://host:19530).
    clip_model None means caption-side only (no image vectors).
    fusion_weights: channel -> weight; channels not named weigh 1.
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
    fusion_weights: dict[str, float] = field(default_factory=dict)
    fusion: str = "client"
    rrf_k: float = 60.0
    batch_size: int = 32
    query_threads: int = 1  # torch/BLAS threads for single-query processes (0 keeps the library defaults)
    clip_dtype: str = ""  # "", "fp32" or "bf16" ("" = bf16 where the CPU has native bf16)
    index_overrides: dict[str, Any] = field(default_factory=dict)
    openai_api_key: str | None = None  # for the openai:text-embedding-* caption model
    match_thresholds: Path = DEFAULT_MATCH_THRESHOLDS  # JSON of fitted per-channel thresholds ("match": good/weak/none)
    ask_images: int = 5  # `mmrag ask` / the app's Ask: how many top results are sent to the VLM as images

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise MmragError(f"unknown fusion {self.fusion!r}: choose client (LlamaIndex weighted RRF) or native (Milvus hybrid_search)")
        check_weights(self.fusion_weights, [])
        if isinstance(self.ask_images, bool) or not isinstance(self.ask_images, int) or not 1 <= self.ask_images <= 20:
            raise MmragError(f"ask_images={self.ask_images!r}: send between 1 and 20 images to the VLM (MMRAG_ASK_IMAGES)")

    @property
    def store_uri(self) -> str:
        return self.uri or str(self.data_dir / "milvus.db")

    @property
    def is_embedded(self) -> bool:
        return not self.store_uri.startswith(("http://", "https://", "tcp://", "unix:"))

    @property
    def cache_path(self) -> Path:
        return self.data_dir / "cache.sqlite"

    def weight(self, channel: str) -> float:
        return self.fusion_weights.get(channel, 1.0)

    def with_(self, **changes: object) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        def get(name: str, default: str | None = None) -> str | None:
            return _env(name, default, environ)

        clip = get("MMRAG_CLIP_MODEL", DEFAULT_CLIP_MODEL)
        weights = get("MMRAG_FUSION_WEIGHTS")
        fusion = get("MMRAG_FUSION", "client") or "client"
        if (get("MMRAG_NATIVE_HYBRID") or "").lower() in _TRUE:  # the older switch still means native fusion
            fusion = "native"
        try:
            threads = int(get("MMRAG_QUERY_THREADS", "1") or 0)
            ask_images = int(get("MMRAG_ASK_IMAGES", "5") or 5)
            timeout = float(get("MMRAG_VLM_TIMEOUT_S", "60") or 60)
        except ValueError as exc:
            raise MmragError(f"bad number in MMRAG_QUERY_THREADS/MMRAG_VLM_TIMEOUT_S/MMRAG_ASK_IMAGES: {exc}") from None
        return cls(
            data_dir=Path(get("MMRAG_DATA_DIR", "mmrag_data") or "mmrag_data"),
            uri=get("MMRAG_URI"),
            token=get("MMRAG_TOKEN", "") or "",
            collection_prefix=get("MMRAG_COLLECTION_PREFIX", "mmrag") or "mmrag",
            clip_model=None if (clip or "").lower() == "none" else clip,
            text_model=get("MMRAG_TEXT_MODEL", DEFAULT_TEXT_MODEL) or DEFAULT_TEXT_MODEL,
            vlm_base_url=get("MMRAG_VLM_BASE_URL", get("OPENAI_BASE_URL")),
            vlm_model=get("MMRAG_VLM_MODEL"),
            vlm_api_key=get("MMRAG_VLM_API_KEY", get("OPENAI_API_KEY")),
            vlm_timeout_s=timeout,
            fusion_weights=parse_weights(weights) if weights else {},
            fusion=fusion.lower(),
            query_threads=threads,
            clip_dtype=(get("MMRAG_CLIP_DTYPE", "") or "").lower(),
            index_overrides=index_overrides_from_env(environ),
            openai_api_key=get("OPENAI_API_KEY"),
            match_thresholds=Path(get("MMRAG_MATCH_THRESHOLDS") or DEFAULT_MATCH_THRESHOLDS),
            ask_images=ask_images,
        )
