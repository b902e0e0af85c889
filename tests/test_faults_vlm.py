"""Fault cases from issue 10 on the VLM side, against the scripted server (plumbing only, never quality).

Captions: one failing image never stops the catalog; it is indexed without its VLM caption, pending, with
the error, nothing cached, and asked again next run. Inspection: a truncated reply is an error, never a
repaired verdict, never cached.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_vlm_server import FakeVLMServer, Reply
from PIL import Image

from ingest.caption_cache import CaptionCache
from ingest.captions import CaptionBuilder
from rag.config import Settings
from rag.inspection.cache import VLMCache
from rag.inspection.prompts import prompt_key
from rag.inspection.runner import InspectConfig, inspect_image
from rag.vlm_client import VLMClient

GOOD = "A red bus on a wet street."
# case -> (replies that fail one image with max_retries=1, words the error must contain)
FAULTS = {
    "timeout": ([Reply(text="late", delay_s=1.2)] * 2, "timed out after 0.4 s; gave up after 2 attempts"),
    "http_429": ([Reply(status=429, text="slow down")] * 2, "still rate-limited (HTTP 429: slow down)"),
    "http_500": ([Reply(status=500, text="boom")] * 2, "server error (HTTP 500: boom)"),
    "dropped_connection": ([Reply(text="x", drop="mid_body")] * 2, "dropped the connection (peer closed connection"),
    "non_json_body": ([Reply(body="<html>Bad Gateway</html>")], "not JSON: '<html>Bad Gateway</html>'"),
    "wrong_json_body": ([Reply(body='{"error": "model loading"}')], """without a completion choice: '{"error": "model loading"}'"""),
    "truncated_length": ([Reply(text="A photo of a.", finish_reason="length")], "cut off by the token limit"),
    "empty_reply": ([""], "empty caption"),
    "control_characters": (["A cat\x1b[31m on a\x00 mat"], "control characters"),
    "garbage_reply": (["... !!! ..."], "no words"),
}


@pytest.fixture
def image() -> Image.Image:
    return Image.new("RGB", (32, 24), "gray")


def _builder(tmp_path: Path, srv: FakeVLMServer, cache: CaptionCache) -> CaptionBuilder:
    settings = Settings(data_dir=tmp_path, vlm_base_url=srv.base_url, vlm_model="fake-vlm", vlm_timeout_s=0.4)
    builder = CaptionBuilder(settings, vlm=True, cache=cache)
    builder.vlm_client.max_retries, builder.vlm_client.backoff_s = 1, 0.01
    return builder


@pytest.mark.parametrize("case", list(FAULTS))
def test_caption_fault_marks_one_image_pending_and_the_next_image_goes_on(tmp_path: Path, image, case: str) -> None:
    replies, needle = FAULTS[case]
    with FakeVLMServer([*replies, GOOD]) as srv, CaptionCache(tmp_path / "c.sqlite") as cache:
        builder = _builder(tmp_path, srv, cache)
        failed = builder.build("hash-a", tmp_path / "yellow_taxi.jpg", image)
        good = builder.build("hash-b", tmp_path / "bus.jpg", image)
        assert failed.pending and len(failed.errors) == 1 and needle in failed.errors[0], failed.errors
        assert "\n" not in failed.errors[0] and "vlm" not in failed.sources
        assert failed.text == "yellow taxi"  # the caption without its VLM part (filename fallback here)
        assert good.sources == {"vlm": GOOD} and not good.pending
        assert cache.get("hash-a", "vlm", "fake-vlm") is None and cache.count("vlm") == 1
    with FakeVLMServer(["A yellow taxi."]) as srv, CaptionCache(tmp_path / "c.sqlite") as cache:  # next run
        again = _builder(tmp_path, srv, cache).build("hash-a", tmp_path / "yellow_taxi.jpg", image)
        assert again.sources == {"vlm": "A yellow taxi."} and not again.pending and len(srv.chat_requests) == 1


def test_caption_cut_at_finish_reason_length_is_not_indexed_or_cached(tmp_path: Path, image) -> None:
    with FakeVLMServer([Reply(text="A photo of a.", finish_reason="length")]) as srv, \
            CaptionCache(tmp_path / "c.sqlite") as cache:
        caption = _builder(tmp_path, srv, cache).build("h", tmp_path / "0001.jpg", image)
        assert caption.text == "" and caption.sources == {} and caption.pending
        assert "A photo of a." in caption.errors[0] and cache.count() == 0


def test_caption_cached_by_an_older_version_with_control_characters_is_asked_again(tmp_path: Path, image) -> None:
    with FakeVLMServer([GOOD]) as srv, CaptionCache(tmp_path / "c.sqlite") as cache:
        cache.put("h", "vlm", "fake-vlm", "A cat\x1b on a mat.")
        caption = _builder(tmp_path, srv, cache).build("h", tmp_path / "x.jpg", image)
        assert caption.sources == {"vlm": GOOD} and len(srv.chat_requests) == 1
        assert cache.get("h", "vlm", "fake-vlm") == GOOD


def test_caption_endpoint_failing_every_call_stops_asking_after_five(tmp_path: Path, image) -> None:
    with FakeVLMServer(default=Reply(status=503)) as srv, CaptionCache(tmp_path / "c.sqlite") as cache:
        builder = _builder(tmp_path, srv, cache)
        captions = [builder.build(f"h{i}", tmp_path / f"cat_{i}.jpg", image) for i in range(8)]
        assert all(c.pending and c.text == "cat" for c in captions)
        assert len(srv.chat_requests) == 5 * 2  # five images x (1 try + 1 retry), then the endpoint is down
        assert captions[-1].errors[0].startswith("VLM caption not asked: 5 VLM calls in a row failed, last:")
        assert cache.count() == 0


# ------------------------------------------------------------------------------------------ inspection
@pytest.fixture
def tile(tmp_path: Path) -> Path:
    path = tmp_path / "tile.png"
    Image.new("RGB", (64, 48), (150, 150, 150)).save(path)
    return path


def _client(srv: FakeVLMServer) -> VLMClient:
    return VLMClient(srv.base_url, "fake-vlm", timeout_s=5, max_retries=1, backoff_s=0.01)


def test_truncated_structured_reply_is_not_repaired_or_cached_and_rerun_asks_again(tmp_path: Path, tile: Path) -> None:
    cut = '{"defective": true, "defect_types": ["crack"], "boxes": [[0.1, 0.2'
    with FakeVLMServer([cut, '{"defective": false, "confidence": 0.9}']) as srv, VLMCache(tmp_path / "v.sqlite") as cache:
        first = inspect_image(_client(srv), tile, InspectConfig("structured"), cache)
        assert first.verdict == "error" and "truncated reply" in first.error and first.defective is None
        assert len(cache) == 0
        second = inspect_image(_client(srv), tile, InspectConfig("structured"), cache)  # the fault is gone
        assert second.verdict == "ok" and len(srv.chat_requests) == 2 and len(cache) == 1


def test_structured_reply_with_finish_reason_length_is_an_error_even_if_parseable(tmp_path: Path, tile: Path) -> None:
    with FakeVLMServer([Reply(text='{"defective": true}', finish_reason="length")]) as srv, \
            VLMCache(tmp_path / "v.sqlite") as cache:
        answer = inspect_image(_client(srv), tile, InspectConfig("structured"), cache)
        assert answer.verdict == "error" and "finish_reason 'length'" in answer.error and len(cache) == 0


def test_truncated_reply_cached_by_an_older_version_is_asked_again(tmp_path: Path, tile: Path) -> None:
    from rag.hashing import file_sha256

    with FakeVLMServer(['{"defective": false}']) as srv, VLMCache(tmp_path / "v.sqlite") as cache:
        cache.put(file_sha256(tile), prompt_key("structured"), "fake-vlm", "none", '{"defective": true, "boxes": [[0.1')
        answer = inspect_image(_client(srv), tile, InspectConfig("structured"), cache)
        assert answer.verdict == "ok" and len(srv.chat_requests) == 1
