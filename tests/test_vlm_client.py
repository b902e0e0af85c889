"""VLMClient against the scripted OpenAI-compatible server on 127.0.0.1: payload, retries, timeouts, errors."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import pytest
from fake_vlm_server import FakeVLMServer, Reply
from PIL import Image

from rag.config import Settings
from rag.errors import MmragError, VLMUnavailableError
from rag.vlm_client import VLMClient, VLMEndpointError, VLMResponseError, VLMTruncatedError, image_data_uri


@pytest.fixture()
def red_png(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (12, 8), (255, 0, 0)).save(path)
    return path


def _client(srv: FakeVLMServer, **kw) -> VLMClient:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return VLMClient(srv.base_url, "fake-vlm", **kw)


def test_sends_prompt_system_and_image_as_data_uri(red_png):
    with FakeVLMServer(["a red square"]) as srv:
        text = _client(srv, api_key="sk-test").chat_image(red_png, "What is this?", system="be brief", max_tokens=64)
    assert text == "a red square"
    (req,) = srv.chat_requests
    assert req.model == "fake-vlm"
    assert req.system == "be brief"
    assert req.texts == ["What is this?"]
    assert req.body["max_tokens"] == 64 and req.body["temperature"] == 0.0
    assert req.headers.get("authorization") == "Bearer sk-test"
    assert req.image_urls[0].startswith("data:image/png;base64,")
    assert req.images[0] == red_png.read_bytes()  # file bytes are sent unchanged


@pytest.mark.parametrize("kind", ["pil", "bytes", "str"])
def test_accepts_pil_bytes_and_str_paths(kind, red_png):
    image = {"pil": Image.open(red_png), "bytes": red_png.read_bytes(), "str": str(red_png)}[kind]
    with FakeVLMServer(["ok"]) as srv:
        assert _client(srv).chat_image(image, "x") == "ok"
        decoded = Image.open(io.BytesIO(srv.chat_requests[0].images[0]))
    assert decoded.size == (12, 8) and decoded.convert("RGB").getpixel((3, 3)) == (255, 0, 0)


def test_jpeg_keeps_its_mime_type(tmp_path):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (8, 8), "blue").save(path)
    assert image_data_uri(path).startswith("data:image/jpeg;base64,")
    assert base64.b64decode(image_data_uri(path).split(",", 1)[1]) == path.read_bytes()


def test_bad_image_input_is_a_one_line_error(tmp_path):
    with pytest.raises(MmragError, match="cannot read image"):
        image_data_uri(tmp_path / "missing.png")
    with pytest.raises(MmragError, match="unrecognised format"):
        image_data_uri(b"not an image at all")


def test_retries_429_and_5xx_with_backoff_then_succeeds(red_png):
    script = [Reply(status=429, text="slow down"), Reply(status=503), "finally"]
    with FakeVLMServer(script) as srv:
        t0 = time.perf_counter()
        assert _client(srv, max_retries=3, backoff_s=0.05).chat_image(red_png, "x") == "finally"
        elapsed = time.perf_counter() - t0
    assert len(srv.chat_requests) == 3
    assert elapsed >= 0.05 + 0.10  # backoff 0.05 then 0.10 (exponential)


def test_exhausted_retries_raise_one_line(red_png):
    with FakeVLMServer([Reply(status=429)] * 3) as srv:
        with pytest.raises(VLMResponseError) as err:
            _client(srv, max_retries=2).chat_image(red_png, "x")
    assert len(srv.chat_requests) == 3
    msg = str(err.value)
    assert "429" in msg and "gave up after 3 attempts" in msg and "\n" not in msg


def test_slow_reply_times_out_then_retry_succeeds(red_png):
    with FakeVLMServer([Reply(text="too late", delay_s=1.5), "in time"]) as srv:
        assert _client(srv, timeout_s=0.4, max_retries=1).chat_image(red_png, "x") == "in time"
    assert len(srv.chat_requests) == 2


def test_always_slow_gives_timeout_error(red_png):
    with FakeVLMServer(default=Reply(text="late", delay_s=1.5)) as srv:
        with pytest.raises(VLMUnavailableError, match=r"timed out after 0.3 s; gave up after 2 attempts"):
            _client(srv, timeout_s=0.3, max_retries=1).chat_image(red_png, "x")


def test_malformed_body_is_a_response_error(red_png):
    with FakeVLMServer([Reply(body="<html>oops</html>"), Reply(body='{"choices": []}')]) as srv:
        client = _client(srv, max_retries=0)
        with pytest.raises(VLMResponseError, match="unusable response|not JSON"):
            client.chat_image(red_png, "x")
        with pytest.raises(VLMResponseError, match="without a completion choice"):
            client.chat_image(red_png, "x")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("<html><body>502 Bad Gateway from nginx</body></html>",
         "returned a body that is not JSON: '<html><body>502 Bad Gateway from nginx</body></html>'"),
        ('{"choices": []}', """returned JSON without a completion choice: '{"choices": []}'"""),
        ('{"error": "model is loading"}', """without a completion choice: '{"error": "model is loading"}'"""),
        ("[1, 2, 3]", "without a completion choice: '[1, 2, 3]'"),
        ("", "not JSON: (empty body)"),
    ],
)
def test_non_json_or_wrong_json_body_says_what_came_back(red_png, body, needle):
    with FakeVLMServer([Reply(body=body)]) as srv:
        with pytest.raises(VLMResponseError) as err:
            _client(srv, max_retries=0).chat_image(red_png, "x")
    assert needle in str(err.value) and "no choices" not in str(err.value) and "\n" not in str(err.value)


def test_long_garbage_body_is_cut_to_200_chars(red_png):
    with FakeVLMServer([Reply(body="x" * 5000)]) as srv:
        with pytest.raises(VLMResponseError) as err:
            _client(srv, max_retries=0).chat_image(red_png, "x")
    assert "x" * 200 + "..." in str(err.value) and "x" * 201 not in str(err.value)


@pytest.mark.parametrize("drop", ["mid_body", "no_response"])
def test_dropped_connection_is_retried_like_5xx(red_png, drop):
    with FakeVLMServer([Reply(text="lost", drop=drop), "after the drop"]) as srv:
        assert _client(srv, max_retries=2).chat_image(red_png, "x") == "after the drop"
    assert len(srv.chat_requests) == 2


def test_dropped_connection_every_time_gives_up_with_bounds(red_png):
    with FakeVLMServer(default=Reply(text="lost", drop="mid_body")) as srv:
        with pytest.raises(VLMResponseError) as err:
            _client(srv, max_retries=2).chat_image(red_png, "x")
    assert len(srv.chat_requests) == 3
    msg = str(err.value)
    assert "dropped the connection (peer closed connection" in msg and "gave up after 3 attempts" in msg
    assert err.value.transport and not isinstance(err.value, VLMEndpointError)


def test_refused_connection_is_retried_until_the_server_is_back(red_png):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = FakeVLMServer(["back again"], port=port)
    timer = threading.Timer(0.3, server.start)
    timer.start()
    try:
        client = VLMClient(f"http://127.0.0.1:{port}/v1", "fake-vlm", max_retries=4, backoff_s=0.2, timeout_s=5)
        assert client.chat_image(red_png, "x") == "back again"
    finally:
        timer.join()
        server.stop()


def test_truncated_reply_finish_reason_length_is_an_error_not_retried(red_png):
    with FakeVLMServer(default=Reply(text="A photo of a.", finish_reason="length")) as srv:
        with pytest.raises(VLMTruncatedError) as err:
            _client(srv, max_retries=3).chat_image(red_png, "x", max_tokens=5)
    assert len(srv.chat_requests) == 1
    assert str(err.value) == "VLM reply cut off by the token limit (5), finish_reason 'length': 'A photo of a.'"
    assert isinstance(err.value, VLMResponseError) and not err.value.transport


@pytest.mark.parametrize(
    ("status", "cls", "needle"),
    [(401, VLMEndpointError, "rejected the API key"), (404, VLMEndpointError, "not found"), (400, VLMResponseError, "HTTP 400")],
)
def test_client_errors_are_not_retried(red_png, status, cls, needle):
    with FakeVLMServer([Reply(status=status, text="nope")] * 3) as srv:
        with pytest.raises(cls, match=needle):
            _client(srv, max_retries=3).chat_image(red_png, "x")
    assert len(srv.chat_requests) == 1


def test_unreachable_endpoint_one_line(red_png):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = VLMClient(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(VLMEndpointError) as err:
        client.chat_image(red_png, "x")
    assert str(err.value) == f"VLM endpoint http://127.0.0.1:{port}/v1 unreachable: connection refused"


def test_from_settings_names_missing_variables():
    with pytest.raises(VLMUnavailableError, match="MMRAG_VLM_BASE_URL and MMRAG_VLM_MODEL"):
        VLMClient.from_settings(Settings())
    with pytest.raises(VLMUnavailableError) as err:
        VLMClient.from_settings(Settings(vlm_base_url="http://127.0.0.1:1/v1"))
    assert "MMRAG_VLM_MODEL" in str(err.value) and "MMRAG_VLM_BASE_URL" not in str(err.value).split("(")[0]
    client = VLMClient.from_settings(Settings(vlm_base_url="http://h:1/v1/", vlm_model="llava", vlm_timeout_s=7))
    assert (client.base_url, client.model, client.timeout_s) == ("http://h:1/v1", "llava", 7.0)


def test_url_without_scheme_is_rejected_up_front():
    with pytest.raises(VLMEndpointError, match="must start with http:// or https://"):
        VLMClient("localhost:8000", "m")


def test_fake_server_callable_responder_sees_each_request(red_png):
    seen = []

    def responder(req):
        seen.append(req.texts[0])
        return f"echo {req.texts[0]}"

    with FakeVLMServer(responder) as srv:
        c = _client(srv)
        assert [c.chat_image(red_png, p) for p in ("a", "b")] == ["echo a", "echo b"]
    assert seen == ["a", "b"]
