"""Client for any OpenAI-compatible chat endpoint with vision (OpenAI, vLLM, Ollama, LM Studio).

One image per call, sent inline as a base64 data URI. Retries 429/5xx, timeouts and dropped or refused
connections with exponential backoff; everything that means "no usable answer from the endpoint" becomes
one readable VLMUnavailableError line that says what came back. A reply cut off at the token limit
(finish_reason "length") is an error, never an answer: callers must not cache or repair it.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import openai

from rag.errors import MmragError, VLMUnavailableError

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from rag.config import Settings


_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}


def image_data_uri(image: "PILImage.Image | str | Path | bytes") -> str:
    """Encode an image (PIL image, file path or encoded bytes) as a data URI, keeping file bytes as they are."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, Path)):
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise MmragError(f"cannot read image {path}: {exc.strerror or exc}") from None
    elif isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    elif isinstance(image, Image.Image):
        buf = io.BytesIO()
        img = image if image.mode in ("RGB", "L", "RGBA") else image.convert("RGB")
        img.save(buf, format="PNG")  # lossless: the model sees exactly these pixels
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    else:
        raise TypeError(f"unsupported image type {type(image).__name__}")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format or ""
    except (UnidentifiedImageError, OSError):
        raise MmragError("not an image the VLM can read (unrecognised format)") from None
    if fmt not in _MIME:  # e.g. TIFF: re-encode to something every endpoint accepts
        with Image.open(io.BytesIO(data)) as img:
            return image_data_uri(img.convert("RGB"))
    return f"data:{_MIME[fmt]};base64," + base64.b64encode(data).decode("ascii")


class VLMEndpointError(VLMUnavailableError):
    """The endpoint as a whole is unusable (unreachable, bad key, unknown model): stop asking it."""


class VLMResponseError(VLMUnavailableError):
    """This one call got no usable answer (retries exhausted, malformed body, request refused).

    transport=True when the endpoint itself failed (timeouts, 429/5xx, dropped connections after every retry):
    many of those in a row mean the endpoint is down, not the image."""

    def __init__(self, message: str, *, transport: bool = False) -> None:
        super().__init__(message)
        self.transport = transport


class VLMTruncatedError(VLMResponseError):
    """The reply stopped at the token limit (or a content filter): an unfinished answer, never to be used or cached."""


def _excerpt(text: str | None, limit: int = 200) -> str:
    """What came back, on one line and short enough for a summary."""
    flat = " ".join((text or "").split())
    if not flat:
        return "(empty body)"
    return repr(flat[:limit] + ("..." if len(flat) > limit else ""))


def _connection_reason(exc: openai.APIConnectionError) -> tuple[bool, str]:
    """(could not connect at all, reason): refused/DNS is the endpoint being unreachable; the rest is a dropped call."""
    cause = exc.__cause__ or exc
    text = " ".join(str(cause).split())[:160]
    if isinstance(cause, httpx.ConnectError) or "refused" in text.lower():
        return True, "connection refused" if "refused" in text.lower() else (text or "connection error")
    return False, text or type(cause).__name__


def _status_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return " ".join(str(msg).split())[:200]
    return " ".join(str(exc.message).split())[:200]


class VLMClient:
    """Ask a vision-language model about one image; returns the assistant's text."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        if not base_url or not model:
            raise VLMUnavailableError(
                "VLM not configured: set MMRAG_VLM_BASE_URL and MMRAG_VLM_MODEL (e.g. http://127.0.0.1:11434/v1 and llava)"
            )
        if not base_url.startswith(("http://", "https://")):
            raise VLMEndpointError(
                f"VLM base URL must start with http:// or https:// (e.g. http://127.0.0.1:11434/v1), got {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        # Local servers ignore the key but the SDK insists on one. Retries are ours, not the SDK's.
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or "not-needed",
            timeout=self.timeout_s,
            max_retries=0,
        )

    @classmethod
    def from_settings(cls, settings: "Settings") -> "VLMClient":
        missing = [
            name
            for name, value in (("MMRAG_VLM_BASE_URL", settings.vlm_base_url), ("MMRAG_VLM_MODEL", settings.vlm_model))
            if not value
        ]
        if missing:
            raise VLMUnavailableError(
                f"VLM not configured: set {' and '.join(missing)} "
                "(any OpenAI-compatible endpoint, e.g. MMRAG_VLM_BASE_URL=http://127.0.0.1:11434/v1 MMRAG_VLM_MODEL=llava)"
            )
        return cls(
            settings.vlm_base_url or "",
            settings.vlm_model or "",
            api_key=settings.vlm_api_key,
            timeout_s=settings.vlm_timeout_s,
        )

    def __repr__(self) -> str:
        return f"VLMClient({self.base_url!r}, model={self.model!r})"

    def chat_image(
        self,
        image: "PILImage.Image | str | Path | bytes",
        prompt: str,
        system: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> str:
        """Send one image + prompt; return the assistant text (may be empty only if the model said nothing)."""
        messages: list[dict] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": prompt},
                    {"type": "image_url", "image_url": {"url": image_data_uri(image)}},
                ],
            }
        )
        where = f"VLM endpoint {self.base_url}"
        last = ""
        unreachable = False
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * (2 ** (attempt - 1)))
            try:
                raw = self._client.chat.completions.with_raw_response.create(
                    model=self.model, messages=messages, max_tokens=max_tokens, temperature=temperature
                )
            except openai.APITimeoutError:
                last, unreachable = f"{where} timed out after {self.timeout_s:g} s", False
                continue
            except openai.APIConnectionError as exc:  # refused, reset, "peer closed connection": retried like 5xx
                unreachable, reason = _connection_reason(exc)
                last = f"{where} unreachable: {reason}" if unreachable else f"{where} dropped the connection ({reason})"
                continue
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise VLMEndpointError(
                    f"{where} rejected the API key (HTTP {exc.status_code}): set MMRAG_VLM_API_KEY"
                ) from None
            except openai.NotFoundError as exc:
                raise VLMEndpointError(
                    f"{where}: model {self.model!r} or chat route not found (HTTP 404: {_status_detail(exc)})"
                ) from None
            except openai.RateLimitError as exc:
                last, unreachable = f"{where} still rate-limited (HTTP 429: {_status_detail(exc)})", False
                continue
            except openai.APIStatusError as exc:
                if exc.status_code >= 500:
                    last, unreachable = f"{where} server error (HTTP {exc.status_code}: {_status_detail(exc)})", False
                    continue
                raise VLMResponseError(f"{where} refused the request (HTTP {exc.status_code}: {_status_detail(exc)})") from None
            except (openai.OpenAIError, ValueError) as exc:  # validation errors before anything was sent
                detail = " ".join(str(exc).split())[:160]
                raise VLMResponseError(f"{where} gave an unusable response ({type(exc).__name__}: {detail})") from None
            return self._answer_text(raw, where, max_tokens)
        if unreachable:  # never connected: the endpoint as a whole is down
            raise VLMEndpointError(last)
        tries = self.max_retries + 1
        raise VLMResponseError(f"{last}; gave up after {tries} attempt{'s' if tries > 1 else ''}", transport=True)

    @staticmethod
    def _answer_text(raw: object, where: str, max_tokens: int) -> str:
        """The assistant text of a 200 reply; a body that is not a finished completion is an error saying what came back."""
        body = raw.http_response.text  # type: ignore[attr-defined]
        try:
            completion = raw.parse()  # type: ignore[attr-defined]
        except (ValueError, openai.OpenAIError):
            raise VLMResponseError(f"{where} returned a body that is not JSON: {_excerpt(body)}") from None
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list) or not choices or getattr(choices[0], "message", None) is None:
            raise VLMResponseError(f"{where} returned JSON without a completion choice: {_excerpt(body)}")
        text = choices[0].message.content or ""
        finish = choices[0].finish_reason
        if finish in ("length", "content_filter"):
            why = f"the token limit ({max_tokens})" if finish == "length" else "a content filter"
            raise VLMTruncatedError(f"VLM reply cut off by {why}, finish_reason {finish!r}: {_excerpt(text, 120)}")
        return text
