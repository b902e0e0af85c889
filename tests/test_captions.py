"""Caption combiner and cache: source order, filename fallback, persistence, VLM captioner over HTTP."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fake_vlm_server import FakeVLMServer, Reply
from PIL import Image

from ingest import ocr
from ingest.caption_cache import CaptionCache
from ingest.captions import Caption, CaptionBuilder, clean_vlm_caption, filename_caption
from rag.config import Settings
from rag.errors import MmragError, VLMUnavailableError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def image() -> Image.Image:
    return Image.new("RGB", (32, 32), "gray")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("red_leather-shoe_0042.jpg", "red leather shoe"),
        ("IMG.2024.blue  cup.png", "IMG blue cup"),
        ("oi_edad07c0a9c89b6b.jpg", "oi"),
        ("0042.jpg", ""),
        ("__.jpg", ""),
    ],
)
def test_filename_caption(name: str, expected: str) -> None:
    assert filename_caption(Path("/any/dir") / name) == expected


def test_filename_fallback_only_when_no_source(tmp_path: Path, image: Image.Image) -> None:
    side = tmp_path / "m.jsonl"
    side.write_text(json.dumps({"file": "known_01.jpg", "title": "A known item", "categories": ["zebra"]}) + "\n")
    builder = CaptionBuilder(Settings(data_dir=tmp_path), metadata=side, root=tmp_path)
    assert builder.build("a", tmp_path / "red_leather-shoe_0042.jpg", image) == Caption(
        "red leather shoe", {"filename": "red leather shoe"}
    )
    assert builder.build("b", tmp_path / "known_01.jpg", image) == Caption(
        "A known item.", {"metadata": "A known item."}
    )
    assert builder.build("c", tmp_path / "12345.jpg", image) == Caption("", {})
    assert builder.catalog_fields(tmp_path / "known_01.jpg") == {}
    assert not (tmp_path / "cache.sqlite").exists()  # no OCR/VLM: the cache is never opened


def test_builder_reports_malformed_sidecar_lines(tmp_path: Path) -> None:
    side = tmp_path / "m.jsonl"
    side.write_text('{"file": "a.jpg", "source": "shop", "price": 3}\n{oops\n{"file": "b.jpg"}\n')
    builder = CaptionBuilder(Settings(data_dir=tmp_path), metadata=side, root=tmp_path)
    assert len(builder.metadata_problems) == 1 and builder.metadata_problems[0].startswith("m.jsonl line 2:")
    assert builder.catalog_fields(tmp_path / "a.jpg") == {"source": "shop", "price": 3}
    with pytest.raises(MmragError, match="not found"):
        CaptionBuilder(Settings(data_dir=tmp_path), metadata=tmp_path / "absent.csv")


def test_sources_combined_metadata_then_ocr(tmp_path: Path, image: Image.Image, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocr, "ocr_caption", lambda img: "text in image: OPEN")
    side = tmp_path / "m.csv"
    side.write_text("image,title,caption\nshop.jpg,Shop front,A shop with a sign\n")
    with CaptionCache(tmp_path / "c.sqlite") as cache:
        caption = CaptionBuilder(Settings(), metadata=side, ocr=True, cache=cache).build("h", tmp_path / "shop.jpg", image)
    assert caption.text == "Shop front. A shop with a sign. text in image: OPEN."
    assert caption.sources == {"metadata": "Shop front. A shop with a sign.", "ocr": "text in image: OPEN"}


def test_cache_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.sqlite"
    with CaptionCache(path) as first:
        assert first.get("h", "vlm", "m1") is None
        first.put("h", "vlm", "m1", "A cat.")
        first.put("h", "ocr", "engine", "")
        reader = CaptionCache(path)  # a concurrent reader sees committed rows at once
        assert reader.get("h", "vlm", "m1") == "A cat."
        first.put("h", "vlm", "m1", "A black cat.")
        assert reader.get("h", "vlm", "m1") == "A black cat."
        reader.close()
    with CaptionCache(path) as second:
        assert second.get("h", "vlm", "m1") == "A black cat."
        assert second.get("h", "vlm", "m2") is None  # another model is another key
        assert second.get("h", "ocr", "engine") == ""  # a cached empty result is not a miss
        assert second.count() == 2 and second.count("vlm") == 1
    with pytest.raises(MmragError, match="closed"):
        second.get("h", "vlm", "m1")


def test_cache_survives_kill(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    script = (
        "import os, signal\n"
        "from ingest.caption_cache import CaptionCache\n"
        f"c = CaptionCache({str(path)!r})\n"
        "for i in range(50): c.put(f'h{i}', 'vlm', 'm', f'caption {i}')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr.decode()
    with CaptionCache(path) as cache:
        assert cache.count() == 50 and cache.get("h49", "vlm", "m") == "caption 49"


def test_corrupt_cache_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(MmragError, match="cannot open caption cache") as info:
        CaptionCache(path)
    assert "\n" not in str(info.value)


def test_clean_vlm_caption() -> None:
    assert clean_vlm_caption('Caption: "A dog on\n a beach."  ') == "A dog on a beach."
    assert clean_vlm_caption("  ") == ""


# ---------------------------------------------------------------- VLM captioner (scripted local server)
def vlm_settings(tmp_path: Path, base_url: str | None, model: str | None = "fake-vlm") -> Settings:
    return Settings(data_dir=tmp_path, vlm_base_url=base_url, vlm_model=model, vlm_timeout_s=5.0)


def test_vlm_caption_cached_one_request_for_two_builds(
    tmp_path: Path, image: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ocr, "ocr_caption", lambda img: "text in image: SALE")
    side = tmp_path / "m.jsonl"
    side.write_text(json.dumps({"file": "shoe.jpg", "title": "Shoe"}) + "\n")
    with FakeVLMServer(default="Caption: A red shoe on a wooden table") as srv:
        settings = vlm_settings(tmp_path, srv.base_url)
        first = CaptionBuilder(settings, metadata=side, ocr=True, vlm=True)
        one = first.build("hash-1", tmp_path / "shoe.jpg", image)
        first.close()
        second = CaptionBuilder(settings, metadata=side, ocr=True, vlm=True)  # new run, same cache file
        two = second.build("hash-1", tmp_path / "renamed.jpg", image)
        second.close()
        requests = srv.chat_requests
    assert len(requests) == 1
    assert requests[0].model == "fake-vlm" and "one or two sentences" in " ".join(requests[0].texts)
    assert Image.open(io.BytesIO(requests[0].images[0])).size == image.size  # the image went as base64
    assert one.text == "Shoe. A red shoe on a wooden table. text in image: SALE."
    assert list(one.sources) == ["metadata", "vlm", "ocr"] and one.sources["vlm"] == "A red shoe on a wooden table."
    assert two.sources["vlm"] == one.sources["vlm"] and "metadata" not in two.sources
    assert second.stats["vlm_cached"] == 1 and second.stats["vlm_calls"] == 0


def test_vlm_other_model_is_another_cache_key(tmp_path: Path, image: Image.Image) -> None:
    with FakeVLMServer(["A cat.", "A black cat."]) as srv, CaptionCache(tmp_path / "c.sqlite") as cache:
        a = CaptionBuilder(vlm_settings(tmp_path, srv.base_url, "model-a"), vlm=True, cache=cache).build("h", tmp_path / "x.jpg", image)
        b = CaptionBuilder(vlm_settings(tmp_path, srv.base_url, "model-b"), vlm=True, cache=cache).build("h", tmp_path / "x.jpg", image)
        assert [r.model for r in srv.chat_requests] == ["model-a", "model-b"]
        assert (a.text, b.text) == ("A cat.", "A black cat.")
        assert cache.get("h", "vlm", "model-a") == "A cat." and cache.get("h", "vlm", "model-b") == "A black cat."


def test_vlm_unreachable_endpoint_marks_pending_caches_nothing_and_stops_asking(tmp_path: Path, image: Image.Image) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with CaptionCache(tmp_path / "c.sqlite") as cache:
        builder = CaptionBuilder(vlm_settings(tmp_path, f"http://127.0.0.1:{port}/v1"), vlm=True, cache=cache)
        builder.vlm_client.backoff_s = 0.01
        first = builder.build("h", tmp_path / "red_car.jpg", image)
        assert first.text == "red car" and first.pending and len(first.errors) == 1
        assert "unreachable: connection refused" in first.errors[0] and "\n" not in first.errors[0]
        second = builder.build("h2", tmp_path / "blue_car.jpg", image)  # the endpoint is down: not asked again
        assert second.pending and second.errors[0].startswith("VLM caption not asked: VLM endpoint")
        assert cache.count() == 0 and builder.vlm_down is not None


def test_vlm_refused_call_not_cached_then_retried(tmp_path: Path, image: Image.Image) -> None:
    with FakeVLMServer([Reply(status=400, text="bad image"), "", "A dog."]) as srv, CaptionCache(tmp_path / "c.sqlite") as cache:
        builder = CaptionBuilder(vlm_settings(tmp_path, srv.base_url), vlm=True, cache=cache)
        refused = builder.build("h", tmp_path / "dog_01.jpg", image)
        assert refused.pending and "HTTP 400" in refused.errors[0] and refused.sources == {"filename": "dog"}
        assert cache.count() == 0
        empty = builder.build("h", tmp_path / "dog_01.jpg", image)  # an empty answer is not remembered either
        assert (empty.text, empty.sources, empty.pending) == ("dog", {"filename": "dog"}, True)
        assert "empty caption" in empty.errors[0] and cache.count() == 0
        done = builder.build("h", tmp_path / "dog_01.jpg", image)
        assert done.sources == {"vlm": "A dog."} and not done.pending and done.errors == []
        assert len(srv.chat_requests) == 3 and cache.get("h", "vlm", "fake-vlm") == "A dog."


def test_vlm_misconfigured_fails_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(VLMUnavailableError, match="MMRAG_VLM_BASE_URL"):
        CaptionBuilder(vlm_settings(tmp_path, None), vlm=True)
    with pytest.raises(VLMUnavailableError, match="MMRAG_VLM_MODEL"):
        CaptionBuilder(vlm_settings(tmp_path, "http://127.0.0.1:9/v1", None), vlm=True)
    assert not (tmp_path / "cache.sqlite").exists()
