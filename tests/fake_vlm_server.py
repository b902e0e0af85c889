"""A scripted OpenAI-compatible chat server on 127.0.0.1 for tests (no model behind it).

Each POST /v1/chat/completions is answered by the next scripted reply, or by a callable
`responder(request) -> reply`. A reply is one of:
  * str                       -> 200 with that assistant text
  * Reply(...)                -> full control: status, text, finish_reason, delay, raw body, headers, drop
A request with "stream": true gets the text as server-sent events (one chunk per word, `chunk_delay_s` apart).
  * an Exception instance     -> raised inside the handler (-> 500)

Every request is recorded (path, headers, parsed JSON body, decoded image bytes) in `server.requests`.

    with FakeVLMServer(["first answer", Reply(status=429), "after retry"]) as srv:
        client = VLMClient(srv.base_url, "fake-model")
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

__all__ = ["FakeVLMServer", "Reply", "RecordedRequest"]


@dataclass
class Reply:
    """One scripted HTTP answer."""

    text: str | None = ""
    status: int = 200
    delay_s: float = 0.0
    body: bytes | str | None = None  # raw body: overrides the generated completion JSON
    headers: dict[str, str] = field(default_factory=dict)
    finish_reason: str | None = "stop"  # "length": the reply was cut off at max_tokens
    drop: str | None = None  # "mid_body": headers and half the body, then close; "no_response": close at once
    chunk_delay_s: float = 0.0  # streamed replies: pause before each chunk


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any] | None
    received_at: float

    @property
    def model(self) -> str | None:
        return (self.body or {}).get("model")

    def _parts(self) -> list[dict[str, Any]]:
        """Content parts of the user messages (the system prompt is `system`)."""
        parts: list[dict[str, Any]] = []
        for message in (self.body or {}).get("messages", []):
            if message.get("role") == "system":
                continue
            content = message.get("content")
            if isinstance(content, list):
                parts.extend(p for p in content if isinstance(p, dict))
            elif isinstance(content, str):
                parts.append({"type": "text", "text": content, "_role": message.get("role")})
        return parts

    @property
    def texts(self) -> list[str]:
        return [p["text"] for p in self._parts() if p.get("type") == "text"]

    @property
    def system(self) -> str | None:
        for message in (self.body or {}).get("messages", []):
            if message.get("role") == "system":
                content = message.get("content")
                return content if isinstance(content, str) else None
        return None

    @property
    def image_urls(self) -> list[str]:
        return [p["image_url"]["url"] for p in self._parts() if p.get("type") == "image_url"]

    @property
    def images(self) -> list[bytes]:
        """Decoded bytes of every base64 data-URI image in the request."""
        out = []
        for url in self.image_urls:
            if url.startswith("data:") and ";base64," in url:
                out.append(base64.b64decode(url.split(";base64,", 1)[1]))
        return out


Responder = Callable[[RecordedRequest], "Reply | str | BaseException"]


def stream_chunks(text: str | None, model: str | None, finish_reason: str | None = "stop") -> list[bytes]:
    """The text as OpenAI chat.completion.chunk events (one per word, spaces kept), then [DONE]."""
    words = re.findall(r"\S+\s*|\s+", text or "")
    events = []
    for i, word in enumerate([""] + words):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": word}
        chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": model or "fake", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        events.append(f"data: {json.dumps(chunk)}\n\n".encode())
    done = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model or "fake",
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]}
    events.append(f"data: {json.dumps(done)}\n\n".encode())
    events.append(b"data: [DONE]\n\n")
    return events


def completion_body(text: str | None, model: str | None, finish_reason: str | None = "stop") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model or "fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


class FakeVLMServer:
    """Threaded HTTP server; use as a context manager. `base_url` ends with /v1."""

    def __init__(
        self,
        script: Iterable["Reply | str | BaseException"] | Responder | None = None,
        *,
        default: "Reply | str | None" = None,
        models: Iterable[str] = ("fake-vlm",),
        port: int = 0,
    ) -> None:
        self._port = port
        self.responder: Responder | None = script if callable(script) else None
        self.queue: deque = deque([] if callable(script) or script is None else list(script))
        self.default = default
        self.models = list(models)
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "FakeVLMServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _drop(self, how: str, body: bytes) -> None:
                """Close the connection like a crashed proxy: before any response, or halfway through the body."""
                self.close_connection = True
                try:
                    if how == "mid_body":
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                    self.connection.shutdown(2)  # socket.SHUT_RDWR
                except OSError:
                    pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # client gave up (timeout test)
                    pass

            def _stream(self, events: list[bytes], delay_s: float) -> None:
                """Server-sent events, then close the connection (no Content-Length)."""
                self.close_connection = True
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for event in events:
                        if delay_s:
                            time.sleep(delay_s)
                        self.wfile.write(event)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # client gave up (timeout test)
                    pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    data = [{"id": m, "object": "model", "owned_by": "fake"} for m in server.models]
                    self._send(200, json.dumps({"object": "list", "data": data}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = None
                req = RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                with server._lock:
                    server.requests.append(req)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                try:
                    reply = server._next_reply(req)
                except BaseException as exc:  # noqa: BLE001 - scripted failure
                    reply = exc
                if isinstance(reply, BaseException):
                    msg = json.dumps({"error": {"message": f"scripted failure: {reply}"}}).encode()
                    self._send(500, msg)
                    return
                if isinstance(reply, str):
                    reply = Reply(text=reply)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.body is None and reply.status < 400 and (req.body or {}).get("stream"):
                    self._stream(stream_chunks(reply.text, req.model, reply.finish_reason), reply.chunk_delay_s)
                    return
                if reply.body is not None:
                    payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
                elif reply.status >= 400:
                    payload = json.dumps(
                        {"error": {"message": reply.text or f"scripted HTTP {reply.status}", "code": reply.status}}
                    ).encode()
                else:
                    payload = completion_body(reply.text, req.model, reply.finish_reason)
                if reply.drop:
                    self._drop(reply.drop, payload)
                    return
                self._send(reply.status, payload, reply.headers)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-vlm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeVLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *replies: "Reply | str | BaseException") -> None:
        with self._lock:
            self.queue.extend(replies)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    def _next_reply(self, req: RecordedRequest) -> "Reply | str | BaseException":
        if self.responder is not None:
            return self.responder(req)
        with self._lock:
            if self.queue:
                return self.queue.popleft()
        if self.default is not None:
            return self.default
        return Reply(status=500, text="fake VLM server: script exhausted")
