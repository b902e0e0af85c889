"""A LlamaIndex chat LLM for any OpenAI-compatible vision endpoint (OpenAI, vLLM, Ollama, LM Studio).

Messages are LlamaIndex `ChatMessage`s whose blocks are `TextBlock`s and `ImageBlock`s; they go out as OpenAI
content parts (text, image_url with a data URI). Why not `llama-index-llms-openai(-like)`: every release of
llama-index-llms-openai (0.6.x to 0.8.3, which openai-like 0.8.1 and the multimodal package need) requires
openai<3, and requirements.txt pins openai==3.54.0. So this class implements LlamaIndex's LLM interface
(CustomLLM: chat, stream_chat, complete) over the pinned openai client.

Failures become one readable line (VLMUnavailableError): 429, 5xx and timeouts before the answer starts are
retried with backoff; a stream that breaks midway is an error, never a shortened answer.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Sequence

import httpx
import openai
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    ImageBlock,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field, PrivateAttr

from rag.errors import MmragError, VLMUnavailableError
from rag.vlm_client import VLMEndpointError, VLMResponseError, _status_detail


def openai_content(message: ChatMessage) -> str | list[dict[str, Any]]:
    """A ChatMessage's blocks as OpenAI content: a plain string when it is text only, else content parts."""
    parts: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            if block.url is not None and not block.image and block.path is None:
                url = str(block.url)
            else:
                data = block.resolve_image(as_base64=True).read().decode("ascii")
                url = f"data:{block.image_mimetype or 'image/jpeg'};base64,{data}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise MmragError(f"unsupported message block {type(block).__name__} for the vision endpoint")
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    return [{"role": m.role.value if isinstance(m.role, MessageRole) else str(m.role), "content": openai_content(m)}
            for m in messages]


class VisionChatLLM(CustomLLM):
    """LlamaIndex LLM over an OpenAI-compatible /chat/completions endpoint with image content blocks."""

    base_url: str = Field(description="endpoint base URL, ending in /v1")
    model: str = Field(description="model name the endpoint serves")
    api_key: str | None = Field(default=None, exclude=True)
    timeout_s: float = 60.0
    max_retries: int = 2
    backoff_s: float = 0.5
    max_tokens: int = 700
    temperature: float = 0.0
    _client: Any = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        if not self.base_url.startswith(("http://", "https://")):
            raise VLMEndpointError(f"VLM base URL must start with http:// or https://, got {self.base_url!r}")
        # Local servers ignore the key but the SDK insists on one. Retries are ours, not the SDK's.
        self._client = openai.OpenAI(base_url=self.base_url.rstrip("/"), api_key=self.api_key or "not-needed",
                                     timeout=self.timeout_s, max_retries=0)

    @classmethod
    def from_settings(cls, settings: Any) -> "VisionChatLLM":
        missing = [name for name, value in (("MMRAG_VLM_BASE_URL", settings.vlm_base_url),
                                            ("MMRAG_VLM_MODEL", settings.vlm_model)) if not value]
        if missing:
            raise VLMUnavailableError(f"no VLM endpoint configured (set {' and '.join(missing)})")
        return cls(base_url=settings.vlm_base_url, model=settings.vlm_model, api_key=settings.vlm_api_key,
                   timeout_s=settings.vlm_timeout_s)

    @classmethod
    def class_name(cls) -> str:
        return "mmrag_vision_chat"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, is_chat_model=True, num_output=self.max_tokens)

    # ------------------------------------------------------------------ chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text = ""
        last = None
        for last in self.stream_chat(messages, **kwargs):
            text = last.message.content or ""
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), raw=last.raw if last else None)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        payload = openai_messages(messages)

        def gen() -> ChatResponseGen:
            text = ""
            for delta in self._deltas(payload):
                text += delta
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.chat([ChatMessage(role=MessageRole.USER, content=prompt)]).message.content or "")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = ""
        for delta in self._deltas(openai_messages([ChatMessage(role=MessageRole.USER, content=prompt)])):
            text += delta
            yield CompletionResponse(text=text, delta=delta)

    # ------------------------------------------------------------------ transport
    def _deltas(self, payload: list[dict[str, Any]]) -> Iterator[str]:
        stream = self._open(payload)
        where = f"VLM endpoint {self.base_url}"
        try:
            for chunk in stream:
                choices = getattr(chunk, "choices", None) or []
                if choices and getattr(choices[0], "delta", None) is not None:
                    content = choices[0].delta.content
                    if content:
                        yield content
        except (openai.APITimeoutError, httpx.TimeoutException):
            raise VLMResponseError(f"{where} timed out after {self.timeout_s:g} s in the middle of the answer") from None
        except (openai.OpenAIError, httpx.HTTPError, ValueError) as exc:
            detail = " ".join(str(exc).split())[:160]
            raise VLMResponseError(f"{where} broke off the answer ({type(exc).__name__}: {detail})") from None
        finally:
            close = getattr(stream, "close", None)
            if callable(close):
                close()

    def _open(self, payload: list[dict[str, Any]]) -> Any:
        """The streaming response, once the endpoint has accepted the request (retries 429, 5xx, timeouts)."""
        where = f"VLM endpoint {self.base_url}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * (2 ** (attempt - 1)))
            try:
                return self._client.chat.completions.create(model=self.model, messages=payload, stream=True,
                                                            max_tokens=self.max_tokens, temperature=self.temperature)
            except openai.APITimeoutError:
                last = f"{where} timed out after {self.timeout_s:g} s"
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc
                reason = "connection refused" if "refused" in str(cause).lower() else " ".join(str(cause).split())[:160]
                raise VLMEndpointError(f"{where} unreachable: {reason or 'connection error'}") from None
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise VLMEndpointError(f"{where} rejected the API key (HTTP {exc.status_code}): set MMRAG_VLM_API_KEY") from None
            except openai.NotFoundError as exc:
                raise VLMEndpointError(f"{where}: model {self.model!r} or chat route not found (HTTP 404: "
                                       f"{_status_detail(exc)})") from None
            except openai.RateLimitError as exc:
                last = f"{where} still rate-limited (HTTP 429: {_status_detail(exc)})"
            except openai.APIStatusError as exc:
                if exc.status_code < 500:
                    raise VLMResponseError(f"{where} refused the request (HTTP {exc.status_code}: "
                                           f"{_status_detail(exc)})") from None
                last = f"{where} server error (HTTP {exc.status_code}: {_status_detail(exc)})"
            except (openai.OpenAIError, ValueError) as exc:
                detail = " ".join(str(exc).split())[:160]
                raise VLMResponseError(f"{where} gave an unusable response ({type(exc).__name__}: {detail})") from None
        tries = self.max_retries + 1
        raise VLMResponseError(f"{last}; gave up after {tries} attempt{'s' if tries > 1 else ''}")
