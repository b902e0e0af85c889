"""One caption text per image from its sources (metadata sidecar, VLM, OCR, filename), provenance kept.

A VLM caption that fails for one image (timeout, 429/5xx after retries, dropped connection, bad body, a reply
cut off at the token limit, empty or garbage text) never stops the run: the image gets its caption without
the VLM part, `pending=True` and the error, nothing is cached, and the next run asks again. After
MAX_CONSECUTIVE_VLM_FAILURES transport failures in a row, or one endpoint-wide error (refused, bad key,
unknown model), the endpoint is taken as down and the remaining images are marked pending without a call.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ingest import ocr as ocr_mod
from ingest.caption_cache import CaptionCache
from ingest.metadata import Scalar, Sidecar, as_sentence, join_sentences
from rag.config import Settings
from rag.errors import MmragError

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
MAX_CONSECUTIVE_VLM_FAILURES = 5  # then the endpoint is down, not the images


@dataclass
class Caption:
    text: str  # the combined caption text used for caption vectors and BM25
    sources: dict[str, str] = field(default_factory=dict)  # "metadata" | "ocr" | "vlm" | "filename" -> its text
    pending: bool = False  # a requested VLM caption failed: index without it, ask again on the next run
    errors: list[str] = field(default_factory=list)  # one line per failed source, for the index summary


def caption_problem(answer: str) -> str | None:
    """Why a VLM answer is not a usable caption (None when it is): empty, control characters, no words."""
    if not answer or not answer.strip():
        return "empty caption"
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in answer) or "\ufffd" in answer:
        return "caption contains control characters"
    if sum(ch.isalpha() for ch in clean_vlm_caption(answer)) < 2:
        return "caption has no words"
    return None


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
        self.stats = {"ocr_runs": 0, "ocr_cached": 0, "vlm_calls": 0, "vlm_cached": 0, "vlm_failed": 0}
        self.vlm_down: str | None = None  # set once the endpoint is taken as down for the rest of this run
        self._transport_failures = 0

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
        """The caption; a failed VLM part leaves pending=True and the reason in errors (never raises for it)."""
        sources: dict[str, str] = {}
        errors: list[str] = []
        if self.sidecar is not None:
            text = self.sidecar.caption_text(path, self.root)
            if text:
                sources["metadata"] = text
        if self.vlm_client is not None:
            text, error = self._vlm_caption(content_hash, image)
            if text:
                sources["vlm"] = text
            if error:
                errors.append(error)
        if self.ocr:
            text = self._ocr_text(content_hash, image)
            if text:
                sources["ocr"] = text
        if not sources:
            text = filename_caption(path)
            if text:
                sources["filename"] = text
        pending = bool(errors)
        if "filename" in sources:
            return Caption(text=sources["filename"], sources=sources, pending=pending, errors=errors)
        return Caption(text=join_sentences(list(sources.values())), sources=sources, pending=pending, errors=errors)

    def catalog_fields(self, path: Path) -> dict[str, Scalar]:
        """Scalar sidecar fields of the image for metadata filters ({} without a sidecar or a matching row)."""
        return self.sidecar.catalog_fields(path, self.root) if self.sidecar is not None else {}

    def _vlm_caption(self, content_hash: str, image: "Image.Image") -> tuple[str, str | None]:
        """(caption, None) or ('', why it failed). Only a usable caption is ever cached."""
        from rag.vlm_client import VLMEndpointError, VLMResponseError

        cached = self.cache.get(content_hash, "vlm", self.vlm_model)
        if cached is not None and caption_problem(cached) is None:  # an unusable cached text is asked again
            self.stats["vlm_cached"] += 1
            return cached, None
        if self.vlm_down is not None:
            self.stats["vlm_failed"] += 1
            return "", f"VLM caption not asked: {self.vlm_down}"
        assert self.vlm_client is not None
        try:
            answer = self.vlm_client.chat_image(image, VLM_PROMPT, system=VLM_SYSTEM, max_tokens=VLM_MAX_TOKENS)
        except VLMEndpointError as exc:
            self.vlm_down = str(exc)
            return self._failed(str(exc))
        except VLMResponseError as exc:
            self._transport_failures = self._transport_failures + 1 if exc.transport else 0
            if self._transport_failures >= MAX_CONSECUTIVE_VLM_FAILURES:
                self.vlm_down = f"{self._transport_failures} VLM calls in a row failed, last: {exc}"
            return self._failed(str(exc))
        except MmragError as exc:  # this image cannot be sent (encoding)
            return self._failed(f"VLM caption failed: {exc}")
        self._transport_failures = 0
        self.stats["vlm_calls"] += 1
        problem = caption_problem(answer or "")
        if problem:
            shown = " ".join((answer or "").split())[:80]
            return self._failed(f"VLM {self.vlm_model} gave an unusable caption ({problem}): {shown!r}")
        text = as_sentence(clean_vlm_caption(answer))
        self.cache.put(content_hash, "vlm", self.vlm_model, text)
        return text, None

    def _failed(self, error: str) -> tuple[str, str]:
        self.stats["vlm_failed"] += 1
        log.debug("VLM caption failed: %s", error)
        return "", error

    def _ocr_text(self, content_hash: str, image: "Image.Image") -> str:
        cached = self.cache.get(content_hash, "ocr", ocr_mod.ENGINE)
        if cached is not None:
            self.stats["ocr_cached"] += 1
            return cached
        text = ocr_mod.ocr_caption(image)
        self.stats["ocr_runs"] += 1
        self.cache.put(content_hash, "ocr", ocr_mod.ENGINE, text)  # '' too: no text is a result worth keeping
        return text
