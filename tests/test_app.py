"""The Streamlit app: pure helpers (rag/app/*, rag/app_launcher.py) and AppTest runs against a real small index."""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import copy_sample, pick_sample, start_app
from PIL import Image

from rag.app.filters import ANY, filter_choices, matches, merge_filters, parse_filters
from rag.app.history import History, ResultCard, Turn
from rag.app.index_info import (
    empty_index_message,
    index_command,
    is_lock_error,
    last_index_time,
    store_error_message,
)
from rag.app.thumbnails import ThumbnailCache, make_thumbnail
from rag.app.uploads import BadUploadError, UploadLimits, check_upload, new_upload_dir, save_upload
from mmrag.app_launcher import run_app, settings_env, streamlit_command
from rag.config import Settings
from rag.errors import MmragError
from rag.hashing import bytes_sha256


def _png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- filters


def test_parse_filters_accepts_separators_and_keeps_commas_in_values() -> None:
    assert parse_filters("source=coco2017; categories_known = true") == {"source": "coco2017", "categories_known": "true"}
    assert parse_filters("source=coco2017, license=Attribution, NonCommercial") == {
        "source": "coco2017",
        "license": "Attribution, NonCommercial",
    }
    assert parse_filters("a=1\nb='two'") == {"a": "1", "b": "two"}
    assert parse_filters("  ") == {} and parse_filters(None) == {}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("source", "expected KEY=VALUE"), ("bad key=1", "bad filter key"), ("source=", "has no value"), ("a=1; a=2", "given twice")],
)
def test_parse_filters_rejects_bad_input_with_one_line(text: str, fragment: str) -> None:
    with pytest.raises(MmragError) as info:
        parse_filters(text)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_filter_choices_keeps_repeating_low_cardinality_keys_only() -> None:
    rows = [
        {"source": "coco", "flag": True, "url": f"http://x/{i}", "size": i, "tags": ["a"], "link": "https://l/a"}
        for i in range(6)
    ] + [{"source": "oi", "flag": False, "url": "http://y", "size": 99, "link": "https://l/b"}] * 3
    choices = filter_choices(rows)
    assert choices == {"flag": ["true", "false"], "source": ["coco", "oi"]}  # most common first; ids/urls/lists dropped
    assert list(filter_choices(rows + [{"source": "oi"}])) == ["source", "flag"]  # keys on more records first
    assert "source" not in filter_choices(rows, skip=["source"])


def test_merge_filters_and_matches() -> None:
    assert merge_filters({"source": ANY, "flag": "true"}, {"license": "BY"}) == {"flag": "true", "license": "BY"}
    with pytest.raises(MmragError, match="both"):
        merge_filters({"source": "coco"}, {"source": "oi"})
    assert matches({"source": "coco", "flag": True}, {"source": "coco", "flag": "true"})
    assert not matches({"source": "coco"}, {"source": "oi"})


# ---------------------------------------------------------------- history


def test_result_card_from_dict_and_ranks_text() -> None:
    card = ResultCard.from_result(
        {"id": "a", "path": "/x.jpg", "score": "0.5", "rank": 2, "ranks": {"clip": None, "caption": 1, "bm25": 7}, "caption": "c"}
    )
    assert (card.score, card.rank) == (0.5, 2)
    assert card.ranks_text() == "CLIP — · caption 1 · BM25 7"


def test_history_caps_turns_and_keeps_order() -> None:
    log = History(max_turns=3)
    turns = [log.add(Turn(text=f"q{i}", image_path=None, mode="hybrid", k=5, filters={})) for i in range(5)]
    assert [t.text for t in log] == ["q2", "q3", "q4"] and log.last is turns[-1]
    assert len({t.id for t in turns}) == 5
    failed = Turn(text="x", image_path=None, mode="bm25", k=3, filters={"a": "b"}, error="store down")
    assert failed.summary == "store down"
    ok = Turn(text="x", image_path="/q.jpg", mode="bm25", k=3, filters={"a": "b"}, timings_ms={"total": 12.4})
    assert ok.summary == "0 results · bm25 where a=b · 12 ms" and ok.title.endswith("+ x")
    log.clear()
    assert len(log) == 0 and log.last is None


# ---------------------------------------------------------------- thumbnails


def test_thumbnail_fits_box_and_cache_tracks_file_changes(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(_png(600, 300))
    thumb = Image.open(io.BytesIO(make_thumbnail(image, 128)))
    assert thumb.size == (128, 128) and thumb.format == "JPEG"  # centre crop: grid rows line up
    assert Image.open(io.BytesIO(make_thumbnail(image, 128, square=False))).size == (128, 64)

    cache = ThumbnailCache(tmp_path / "thumbs", size=128, square=False)
    first = cache.get(image)
    assert cache.get(image) == first and (cache.hits, cache.misses) == (1, 1)
    assert len(list((tmp_path / "thumbs").glob("*.jpg"))) == 1
    # a second process (new cache object) reads the disk tier instead of re-encoding
    again = ThumbnailCache(tmp_path / "thumbs", size=128, square=False)
    (next((tmp_path / "thumbs").glob("*.jpg"))).write_bytes(b"from disk")
    assert again.get(image) == b"from disk"
    square = ThumbnailCache(tmp_path / "thumbs", size=128)  # another shape is another entry
    assert Image.open(io.BytesIO(square.get(image))).size == (128, 128)
    assert len(list((tmp_path / "thumbs").glob("*.jpg"))) == 2

    image.write_bytes(_png(100, 400, (0, 0, 255)))
    os.utime(image, ns=(1, 2_000_000_000))
    changed = cache.get(image)
    assert changed != first and Image.open(io.BytesIO(changed)).size == (32, 128)


def test_thumbnail_of_missing_or_broken_file_is_a_placeholder(tmp_path: Path) -> None:
    cache = ThumbnailCache(None, size=64)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    for path in (tmp_path / "nope.jpg", broken):
        data = cache.get(path)
        assert Image.open(io.BytesIO(data)).size == (64, 64)
    assert cache.misses == 0  # placeholders are not cached: a fixed file shows up on the next run


def test_thumbnail_cache_lru_bound() -> None:
    cache = ThumbnailCache(None, size=32, max_items=2)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(3):
            path = Path(folder) / f"{i}.png"
            path.write_bytes(_png(40, 40, (i * 50, 0, 0)))
            paths.append(path)
            cache.get(path)
        assert len(cache._memory) == 2 and cache.key(paths[0]) not in cache._memory


# ---------------------------------------------------------------- uploads


def test_save_upload_keeps_bytes_inside_temp_dir() -> None:
    folder = new_upload_dir()
    try:
        assert folder.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
        data = _png()
        path = save_upload("../../etc/evil name.png", data, folder)
        assert path.parent == folder and path.read_bytes() == data  # unchanged: content hash still matches the catalog
        assert path.name == bytes_sha256(data)[:16] + ".png"
        assert save_upload("other.png", data, folder) == path
    finally:
        import shutil

        shutil.rmtree(folder)


def test_save_upload_refuses_folder_outside_temp(tmp_path: Path) -> None:
    # The repo itself may live under the temp dir (a CI clone in /tmp), so aim beside the temp dir instead.
    outside = Path(tempfile.gettempdir()).resolve().parent / "mmrag_uploads_should_not_exist"
    with pytest.raises(BadUploadError, match="outside the temp dir"):
        save_upload("a.png", _png(), outside)
    assert not outside.exists()


@pytest.mark.parametrize(
    ("name", "data", "limits", "fragment"),
    [
        ("a.gif", b"GIF89a", UploadLimits(), "not an accepted image type"),
        ("a.png", b"", UploadLimits(), "is empty"),
        ("a.png", b"x" * 2048, UploadLimits(max_bytes=1024), "the limit is"),
        ("a.png", b"garbage" * 10, UploadLimits(), "not a readable image"),
        ("a.png", None, UploadLimits(max_pixels=100), "pixels"),
    ],
)
def test_check_upload_rejects(name: str, data: bytes | None, limits: UploadLimits, fragment: str) -> None:
    with pytest.raises(BadUploadError, match=fragment):
        check_upload(name, _png() if data is None else data, limits)


def test_check_upload_uses_real_format_not_name() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    assert check_upload("photo.png", buffer.getvalue()) == ".jpg"


# ---------------------------------------------------------------- index panel messages


def test_store_messages_give_the_command_to_run(tmp_path: Path) -> None:
    embedded = Settings(data_dir=tmp_path / "d", clip_model=None)
    message, commands = store_error_message(embedded, "DataDirLockedError: another process holds the lock on 'x'")
    assert "held by another process" in message
    assert commands[0].startswith("milvus-lite server --data-dir ") and str(tmp_path / "d" / "milvus.db") in commands[0]
    assert any(c.startswith("MMRAG_URI=http://127.0.0.1:19530 mmrag app") for c in commands)

    served = Settings(data_dir=tmp_path, uri="http://127.0.0.1:19999")
    message, commands = store_error_message(served, "connection refused")
    assert "Cannot reach the Milvus server at http://127.0.0.1:19999" in message and "--port 19999" in commands[0]

    message, commands = empty_index_message(embedded)
    assert "is empty" in message and commands == [index_command(embedded)]
    assert commands[0].startswith(f"MMRAG_DATA_DIR={tmp_path / 'd'} MMRAG_CLIP_MODEL=none mmrag index ")
    assert is_lock_error("LOCK held") and not is_lock_error("timeout")


def test_last_index_time_prefers_catalog_field_then_store_mtime(tmp_path: Path) -> None:
    rows = [{"indexed_at": "2024-05-01T10:00:00+00:00"}, {"indexed_at": 1_800_000_000}, {}]
    assert last_index_time(rows) == datetime.fromtimestamp(1_800_000_000, tz=timezone.utc)
    store = tmp_path / "milvus.db"
    (store / "seg").mkdir(parents=True)
    (store / "seg" / "data").write_text("x")
    os.utime(store / "seg" / "data", (1_700_000_000, 1_700_000_000))
    (store / "LOCK").write_text("")  # the lock file changes on every open; it is not an index time
    assert last_index_time([{}], str(store)) == datetime.fromtimestamp(1_700_000_000, tz=timezone.utc)
    assert last_index_time([{}], "http://127.0.0.1:1") is None


# ---------------------------------------------------------------- launcher


def test_settings_env_round_trips_through_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        data_dir=tmp_path,
        uri="http://127.0.0.1:19531",
        clip_model=None,
        text_model="multilingual-e5-small",
        vlm_base_url="http://127.0.0.1:8000/v1",
        vlm_model="m",
        fusion_weights={"clip": 0.5, "caption": 1.0, "bm25": 2.0},
    )
    for key in list(os.environ):
        if key.startswith("MMRAG_") or key.startswith("OPENAI_"):
            monkeypatch.delenv(key)
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    assert Settings.from_env() == settings


def test_streamlit_command_binds_localhost_only() -> None:
    command = streamlit_command(8765, max_upload_mb=3)
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"] and command[4].endswith("app_streamlit.py")
    options = dict(zip(command[5::2], command[6::2]))
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8765"
    assert options["--server.maxUploadSize"] == "3" and options["--browser.gatherUsageStats"] == "false"


def test_run_app_passes_settings_env_and_returns_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import subprocess

    seen = {}

    class FakePopen:
        def __init__(self, command: list[str], env: dict[str, str], cwd: str) -> None:
            seen.update(command=command, env=env, cwd=cwd)

        def wait(self, timeout: float | None = None) -> int:
            return 3

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    settings = Settings(data_dir=tmp_path, clip_model=None)
    assert run_app(argparse.Namespace(port=9999, max_upload_mb=4), settings) == 3
    assert seen["env"]["MMRAG_CLIP_MODEL"] == "none" and seen["env"]["MMRAG_DATA_DIR"] == str(tmp_path.resolve())
    assert seen["env"]["MMRAG_MAX_UPLOAD_MB"] == "4" and "9999" in seen["command"]
    with pytest.raises(MmragError, match="--port"):
        run_app(argparse.Namespace(port=70000), settings)


# ================================================================ AppTest: the real app over a real small index

APP_ENV_KEYS = ("MMRAG_URI", "MMRAG_CLIP_MODEL", "MMRAG_TEXT_MODEL", "MMRAG_MODELS_FROM_INDEX", "MMRAG_VLM_BASE_URL",
                "MMRAG_VLM_MODEL", "OPENAI_BASE_URL", "MMRAG_FUSION_WEIGHTS", "MMRAG_COLLECTION_PREFIX")  # fmt: skip
N_IMAGES = 24
STEP = 23  # full set: every 23rd row, COCO photos plus a few Open Images ones (sources differ, so a filter bites)


@pytest.fixture(scope="module")
def app_index(tmp_path_factory, retrieval_data, retrieval_rows, random_clip_dir, clip_model, text_model):
    """24 sample images indexed with the random-weight CLIP (image side) and MiniLM captions; env points the app at it."""
    from conftest import copy_sample, pick_sample
    from ingest.pipeline import index_folder

    root = tmp_path_factory.mktemp("app_index")
    images = copy_sample(retrieval_rows, retrieval_data, root, N_IMAGES, step=STEP)
    settings = Settings(data_dir=root / "data", clip_model=str(random_clip_dir))
    report = index_folder(images, settings, metadata=root / "metadata.jsonl", show_progress=False,
                          clip=clip_model, text_embedder=text_model)  # fmt: skip
    assert report.total_in_store == N_IMAGES and not report.bad_files
    with pytest.MonkeyPatch.context() as env:
        for key in APP_ENV_KEYS:
            env.delenv(key, raising=False)
        env.setenv("MMRAG_DATA_DIR", str(settings.data_dir))
        yield {"settings": settings, "images": images, "rows": pick_sample(retrieval_rows, N_IMAGES, STEP)}
    _release_app_engines()


def _release_app_engines() -> None:
    """Close what the app cached (st.cache_resource on_release closes the engine) so the store is free again."""
    import streamlit as st

    st.cache_resource.clear()


@pytest.fixture(scope="module")
def engine(app_index, clip_model, text_model):
    """An independent engine on the same index: what the app shows must equal what it returns."""
    from rag.search import SearchEngine

    with SearchEngine.open(app_index["settings"], clip=clip_model, text_embedder=text_model) as opened:
        yield opened


@pytest.fixture(scope="module")
def open_calls(app_index, engine):
    """Counts SearchEngine.open calls made by the app during this module."""
    from rag.search import SearchEngine

    calls = []
    original = SearchEngine.open.__func__

    def counting(cls, *args, **kwargs):
        calls.append(args)
        return original(cls, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SearchEngine, "open", classmethod(counting))
        yield calls


def _last_turn(at) -> Turn:
    return at.session_state["history"].last


def _result_images(at) -> list:
    """Thumbnails of result cards (their caption starts with '#rank')."""
    return [img for img in at.image if img.captions and img.captions[0].startswith("#")]


def test_app_shows_index_panel(app_index, open_calls) -> None:
    at = start_app()
    assert at.sidebar.metric[0].value == str(N_IMAGES)
    panel = " ".join(c.value for c in at.sidebar.caption)
    assert str(app_index["settings"].store_uri) in panel and "embedded Milvus Lite" in panel
    assert "random-clip-vit-b32" in panel and "all-MiniLM-L6-v2" in panel  # the models recorded in the index
    assert "Last indexed — unknown" not in panel
    assert at.radio(key="mode").options == ["Hybrid (RRF)", "CLIP", "Caption", "BM25", "OCR text"]


def test_text_search_turn_matches_the_engine(app_index, engine, open_calls) -> None:
    at = start_app()
    at.chat_input(key="chat").set_value("a dog on a couch").run()
    assert not at.exception
    turn = _last_turn(at)
    expected = engine.search("a dog on a couch", mode="hybrid", k=10)
    assert [c.id for c in turn.results] == [r.id for r in expected.results]
    shown = _result_images(at)
    assert len(shown) == 10
    assert [img.captions[0] for img in shown] == [f"#{r.rank} · score {r.score:.4f}" for r in expected.results]
    ranks_shown = [c.value for c in at.caption if c.value.startswith("CLIP ")]
    assert ranks_shown == [ResultCard.from_result(r).ranks_text() for r in expected.results]
    assert any(r.ranks["clip"] and r.ranks["caption"] for r in expected.results)  # hybrid fused both sides
    assert [e.label for e in at.expander].count("Caption") == 10
    # a second query keeps the first turn in the session history
    at.chat_input(key="chat").set_value("people at a table").run()
    assert [t.text for t in at.session_state["history"]] == ["a dog on a couch", "people at a table"]
    assert len(_result_images(at)) == 20


def test_mode_switch_to_bm25_and_k(app_index, engine, open_calls) -> None:
    at = start_app()
    at.radio(key="mode").set_value("bm25")
    at.slider(key="k").set_value(4)
    at.chat_input(key="chat").set_value("dog").run()
    turn = _last_turn(at)
    expected = engine.search("dog", mode="bm25", k=4)
    assert turn.mode == "bm25" and [c.id for c in turn.results] == [r.id for r in expected.results]
    assert 1 <= len(turn.results) <= 4
    for card in turn.results:
        assert card.ranks == {"clip": None, "caption": None, "bm25": card.rank, "ocr": None}
    assert "CLIP — · caption — · BM25 1 · OCR —" in [c.value for c in at.caption]


def _rare_filter(rows: list[dict]) -> tuple[str, str, int]:
    """A filter that bites: the rarer source (full set: the Open Images rows), else the rarer COCO split
    (examples/catalog is COCO only)."""
    for key in ("source", "coco_split"):
        counts = Counter(row[key] for row in rows if row.get(key) is not None)
        if len(counts) >= 2:
            value = min(sorted(counts), key=counts.__getitem__)
            return key, value, counts[value]
    raise AssertionError("the indexed rows differ in neither source nor coco_split")


def test_filter_restricts_results(app_index, engine, open_calls) -> None:
    key, value, n_value = _rare_filter(app_index["rows"])
    at = start_app()
    at.selectbox(key=f"filter_{key}").set_value(value)
    at.chat_input(key="chat").set_value("a bird or a boat").run()
    turn = _last_turn(at)
    assert turn.filters == {key: value} and turn.error is None
    assert len(turn.results) == min(10, n_value)  # k=10: every matching row up to k (CLIP ranks them all), nothing else
    stored = engine.records([c.id for c in turn.results])
    assert all(stored[c.id][key] == value for c in turn.results)

    # a typed filter on an unknown field: the engine's one-line error replaces the results
    at.selectbox(key=f"filter_{key}").set_value(ANY)
    at.text_input(key="filters_text").set_value("colour=red")
    at.chat_input(key="chat").set_value("dog").run()
    assert "unknown filter field 'colour'" in _last_turn(at).error
    assert any("unknown filter field" in e.value for e in at.error)
    # a malformed typed filter is caught before searching
    at.text_input(key="filters_text").set_value("colour")
    at.chat_input(key="chat").set_value("dog").run()
    assert _last_turn(at).error.startswith("Not searched: bad filter 'colour'")


def test_image_upload_query_drops_its_own_hit(app_index, engine, open_calls) -> None:
    query = sorted(app_index["images"].iterdir())[3]
    data = query.read_bytes()
    at = start_app()
    at.radio(key="mode").set_value("clip")
    at.file_uploader(key="upload").upload(query.name, data, "image/jpeg")
    at.run()
    at.button(key="upload_search").click().run()
    assert not at.exception
    turn = _last_turn(at)
    assert turn.error is None and turn.mode == "clip"
    stored = Path(turn.image_path)
    assert stored.read_bytes() == data and stored.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
    own_id = bytes_sha256(data)
    assert engine.records([own_id]) and own_id not in [c.id for c in turn.results]
    expected = engine.search(image=query, mode="clip", k=10)
    assert [c.id for c in turn.results] == [r.id for r in expected.results] and len(turn.results) == 10

    # "Similar images" on result #2 makes it the next image query (hybrid: CLIP vector + its catalog caption)
    at.radio(key="mode").set_value("hybrid").run()
    second = turn.results[1]
    at.button(key=f"similar_{turn.id}_2").click().run()
    follow = _last_turn(at)
    assert follow.image_path == second.path and follow.mode == "hybrid"
    assert second.id not in [c.id for c in follow.results]
    assert [c.id for c in follow.results] == [r.id for r in engine.search(image=second.path, k=10).results]
    assert any(c.ranks["caption"] for c in follow.results)  # the catalog image's caption searched the text side


def test_bad_upload_is_one_line_and_writes_nothing(app_index, open_calls) -> None:
    def stored_uploads() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("mmrag_uploads_*/*"))

    at = start_app()
    before = stored_uploads()
    at.file_uploader(key="upload").upload("fake.png", b"this is not a png", "image/png")
    at.run()
    at.button(key="upload_search").click().run()
    turn = _last_turn(at)
    assert turn.results == [] and "not a readable image" in turn.error and "\n" not in turn.error
    assert any("not a readable image" in e.value for e in at.error)
    assert stored_uploads() == before


def test_models_load_once_per_process(open_calls) -> None:
    # every AppTest in this module ran the script several times; the engine (and its models) opened once
    at = start_app()
    at.chat_input(key="chat").set_value("dog").run()
    at.chat_input(key="chat").set_value("cat").run()
    assert len(open_calls) == 1


def test_missing_index_says_which_command_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in APP_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MMRAG_DATA_DIR", str(tmp_path / "nothing_here"))
    at = start_app()
    assert any("is empty: nothing to search yet" in w.value for w in at.warning) and not at.error
    commands = [c.value for c in at.code]
    assert f"MMRAG_DATA_DIR={tmp_path / 'nothing_here'} mmrag index /path/to/images --metadata /path/to/metadata.jsonl" in commands
    assert not at.chat_input  # nothing to search: no chat box


def test_store_held_by_another_process_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    store = tmp_path / "data" / "milvus.db"
    store.mkdir(parents=True)
    (store / "LOCK").touch()
    holder = subprocess.Popen(  # stands in for a running `mmrag index`: holds the Milvus Lite folder lock
        [sys.executable, "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)", str(store / "LOCK")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        for key in APP_ENV_KEYS:
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("MMRAG_DATA_DIR", str(tmp_path / "data"))
        at = start_app()
        errors = [e.value for e in at.error]
        assert any("is held by another process" in e and str(store) in e for e in errors), errors
        commands = [c.value for c in at.code]
        assert f"milvus-lite server --data-dir {store} --host 127.0.0.1 --port 19530" in commands
        assert "MMRAG_URI=http://127.0.0.1:19530 mmrag app" in commands
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- inspection tab


@pytest.fixture()
def inspection_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The app with no index, no VLM, and its caches in tmp; the labelled inspection set must exist."""
    from conftest import INSPECTION
    from rag.app.inspection_support import load_inspection_set

    if not (INSPECTION / "ground_truth.jsonl").exists():
        pytest.skip(f"inspection set not found at {INSPECTION} (set MMRAG_SHARED_DATA)")
    for key in APP_ENV_KEYS + ("MMRAG_VLM_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MMRAG_DATA_DIR", str(tmp_path / "data"))
    return load_inspection_set()


def _markdown(at) -> list[str]:
    return [m.value for m in at.markdown]


def test_inspection_without_vlm_shows_the_pixel_baseline_against_gold(inspection_env) -> None:
    from rag.inspection.scoring import score_image
    from rag.app.inspection_support import answer_text
    from rag.inspection.runner import baseline_answer

    dataset = inspection_env
    file = next(f for f in dataset.available() if dataset.labels[f].template_file)  # a PCB scan with its template
    label = dataset.labels[file]
    at = start_app()
    assert any("VLM not configured" in c.value for c in at.caption)
    at.selectbox(key="insp_file").set_value(file)
    at.button(key="insp_run").click().run()
    assert not at.exception
    assert any("VLM not configured" in i.value and "pixel baseline instead" in i.value for i in at.info)
    expected = baseline_answer(dataset.path(file), dataset.template(label))
    text = _markdown(at)
    assert f"**Answer — pixel baseline ({expected.extra['method']})**" in text
    assert answer_text(expected) in text
    status = score_image(label, expected).status
    assert any(t.startswith(f"**Score:** {status} — ") for t in text)
    overlays = [img for img in at.image if img.captions and img.captions[0].startswith("green: gold")]
    assert len(overlays) == 1


def test_inspection_with_a_vlm_uses_prompt_crops_and_cache(inspection_env, monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_vlm_server import FakeVLMServer
    from rag.inspection.prompts import prompt_text

    dataset = inspection_env
    reply = '{"defective": "yes", "defect_types": ["blowhole"], "boxes": [[0.4, 0.4, 0.6, 0.6]], "confidence": 0.9}'
    defective = next(f for f in dataset.available() if dataset.labels[f].source == "magnetic_tile" and dataset.labels[f].is_defective)
    clean = next(f for f in dataset.available() if dataset.labels[f].source == "magnetic_tile" and not dataset.labels[f].is_defective)
    with FakeVLMServer(default=reply) as server:
        monkeypatch.setenv("MMRAG_VLM_BASE_URL", server.base_url)
        monkeypatch.setenv("MMRAG_VLM_MODEL", "fake-vlm")
        at = start_app()
        at.selectbox(key="insp_file").set_value(defective)
        at.selectbox(key="insp_prompt").set_value("uncertain")
        at.radio(key="insp_crops").set_value("2x2")
        at.button(key="insp_run").click().run()
        assert not at.exception
        assert len(server.requests) == 4  # one call per overlapping tile
        assert all(prompt_text("uncertain") in r.texts for r in server.requests)
        text = _markdown(at)
        assert "**Answer — VLM fake-vlm**" in text
        assert any(t.startswith("**Score:** TP — correct: defect found") for t in text)
        assert not at.info  # no fallback note

        at.button(key="insp_run").click().run()
        assert len(server.requests) == 4  # the same image/prompt/crops again: answered from the reply cache

        at.selectbox(key="insp_file").set_value(clean)
        at.radio(key="insp_crops").set_value("none")
        at.button(key="insp_run").click().run()
        assert len(server.requests) == 5
        assert any(t.startswith("**Score:** FP — wrong: false alarm") for t in _markdown(at))


def test_inspection_upload_of_a_labelled_image_keeps_its_gold(inspection_env) -> None:
    dataset = inspection_env
    file = next(f for f in dataset.available() if dataset.labels[f].is_defective)
    at = start_app()
    at.radio(key="insp_origin").set_value("Upload").run()
    at.file_uploader(key="insp_upload").upload("copy.jpg", dataset.path(file).read_bytes(), "image/jpeg")
    at.run()
    assert any(f"Same bytes as labelled image {file}" in c.value for c in at.caption)
    at.button(key="insp_run").click().run()
    assert not at.exception
    assert any(t.startswith("**Score:** ") for t in _markdown(at))


def test_mmrag_app_serves_on_localhost_and_stops_on_sigterm(tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import time
    import urllib.request

    from rag.dev.milvus_server import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMRAG_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmrag.cli", "app", "--port", str(port), "--data-dir", str(tmp_path / "d")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline, body = time.monotonic() + 90, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                time.sleep(0.3)
        assert body == "ok", proc.stderr.read() if proc.poll() is not None else "no answer"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
        with pytest.raises(OSError):  # Streamlit went down with it: nothing listens any more
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
