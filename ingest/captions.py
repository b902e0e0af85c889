"""One caption text per image from its sources (metadata sidecar, VLM, OCR, filename), provenance kept."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ingest import ocr as ocr_mod
from ingest.caption_cache import CaptionCache
from ingest.metadata import Scalar, Sidecar, as_sentence, join_sentences
from rag.config import Settings

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

VLM_PROMPT = (
    "Write a factual caption of this image in one or two sentences: the main objects, their colours and "
    "materials, what they are doing and the setting. Describe only what is visible. "
    "Answer with the caption only."
)
VLM_SYSTEM = "You caption images for a search index. Be concise and literal."
VLM_MAX_TOKENS = 120
_HEX_ID_RE = re.compile(r"(?=[0-9a-f]*[0-9])[0-9a-f]{8,}")
_PREAMBLE_RE = re.compile(r"^(?:caption|image caption|description)\s*:\s*", re.IGNORECASE)


@dataclass
class Caption:
    text: str  # the combined caption text used for caption vectors and BM25
    sources: dict[str, str] = field(default_factory=dict)  # "metadata" | "ocr" | "vlm" | "filename" -> its text


def filename_caption(path: str | Path) -> str:
    """'red_leather-shoe_0042.jpg' -> 'red leather shoe': stem words, digit-only and hex-id tokens dropped."""
    words = re.split(r"[\s_.\-]+", Path(path).stem)
    return " ".join(w for w in words if w and not w.isdigit() and not _HEX_ID_RE.fullmatch(w.lower()))


def clean_vlm_caption(answer: str) -> str:
    """The VLM's answer as one line, without a 'Caption:' preamble or wrapping quotes."""
    text = " ".join(answer.split())
    text = _PREAMBLE_RE.sub("", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


class CaptionBuilder:
    """Builds Caption objects for the index pipeline; OCR and VLM results are cached by content hash."""

    def __init__(
        self,
        settings: Settings,
        *,
        metadata: Path | None = None,
        root: Path | None = None,
        ocr: bool = False,
        vlm: bool = False,
        cache: CaptionCache | None = None,
    ) -> None:
        self.settings = settings
        self.root = root
        self.ocr = ocr
        self.sidecar = Sidecar.load(metadata) if metadata is not None else None
        self.vlm_client = None
        self.vlm_model = ""
        if vlm:  # built now so a misconfigured endpoint fails before any image is read
            from rag.vlm_client import VLMClient

            self.vlm_client = VLMClient.from_settings(settings)
            self.vlm_model = str(getattr(self.vlm_client, "model", None) or settings.vlm_model or "")
        self._cache = cache
        self._owns_cache = cache is None
        self.stats = {"ocr_runs": 0, "ocr_cached": 0, "vlm_calls": 0, "vlm_cached": 0}

    @property
    def metadata_problems(self) -> list[str]:
        """Malformed sidecar lines, one readable line each ('metadata.jsonl line 7: invalid JSON ...')."""
        return list(self.sidecar.problems) if self.sidecar else []

    @property
    def cache(self) -> CaptionCache:
        if self._cache is None:
            self._cache = CaptionCache(self.settings.cache_path)
        return self._cache

    def close(self) -> None:
        """Close the cache this builder opened itself (a cache passed in stays open)."""
        if self._owns_cache and self._cache is not None:
            self._cache.close()
            self._cache = None

    def build(self, content_hash: str, path: Path, image: "Image.Image") -> Caption:
        sources: dict[str, str] = {}
        if self.sidecar is not None:
            text = self.sidecar.caption_text(path, self.root)
            if text:
                sources["metadata"] = text
        if self.vlm_client is not None:
            text = self._vlm_caption(content_hash, image)
            if text:
                sources["vlm"] = text
        if self.ocr:
            text = self._ocr_text(content_hash, image)
            if text:
                sources["ocr"] = text
        if not sources:
            text = filename_caption(path)
            if text:
                sources["filename"] = text
        if "filename" in sources:
            return Caption(text=sources["filename"], sources=sources)
        return Caption(text=join_sentences(list(sources.values())), sources=sources)

    def catalog_fields(self, path: Path) -> dict[str, Scalar]:
        """Scalar sidecar fields of the image for metadata filters ({} without a sidecar or a matching row)."""
        return self.sidecar.catalog_fields(path, self.root) if self.sidecar is not None else {}

    def _vlm_caption(self, content_hash: str, image: "Image.Image") -> str:
        cached = self.cache.get(content_hash, "vlm", self.vlm_model)
        if cached is not None:
            self.stats["vlm_cached"] += 1
            return cached
        assert self.vlm_client is not None
        # VLMUnavailableError propagates: a failed call is never cached.
        answer = self.vlm_client.chat_image(image, VLM_PROMPT, system=VLM_SYSTEM, max_tokens=VLM_MAX_TOKENS)
        self.stats["vlm_calls"] += 1
        text = as_sentence(clean_vlm_caption(answer or ""))
        if text:  # an empty answer is retried on the next run rather than remembered
            self.cache.put(content_hash, "vlm", self.vlm_model, text)
        else:
            log.warning("VLM %s returned an empty caption for %s", self.vlm_model, content_hash[:12])
        return text

    def _ocr_text(self, content_hash: str, image: "Image.Image") -> str:
        cached = self.cache.get(content_hash, "ocr", ocr_mod.ENGINE)
        if cached is not None:
            self.stats["ocr_cached"] += 1
            return cached
        text = ocr_mod.ocr_caption(image)
        self.stats["ocr_runs"] += 1
        self.cache.put(content_hash, "ocr", ocr_mod.ENGINE, text)  # '' too: no text is a result worth keeping
        return text
