"""Grounded answers: `mmrag ask`, the Asker over a real small index, and the app's Ask toggle, against the scripted
local VLM server (tests/fake_vlm_server.py). Plumbing only: nothing here measures answer quality."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, start_app
from fake_vlm_server import FakeVLMServer, Reply
from rag.ask import NO_ENDPOINT, Asker, Conversation, Source, downscaled_jpeg, parse_citations
from rag.config import Settings
from rag.errors import VLMUnavailableError
from rag.vision_llm import VisionChatLLM

QUESTION = "which photos show a dog on a beach, and what are the dogs doing?"
FOLLOW_UP = "only the ones with two dogs"
ANSWER = "A dog runs along the shore in [1]; in [2, 3] dogs rest. [7] shows nothing of the kind, nor does [40]."


# ---------------------------------------------------------------- pure parts


def _sources(n: int, sent: int) -> list[Source]:
    return [Source(i, f"id{i}", f"/p/{i}.jpg", f"caption {i}", i <= sent) for i in range(1, n + 1)]


def test_citations_are_parsed_and_unsent_ones_flagged() -> None:
    citations = parse_citations(ANSWER + " Again [1].", _sources(10, 5))
    assert [(c.number, c.sent, c.result_id) for c in citations] == [
        (1, True, "id1"), (2, True, "id2"), (3, True, "id3"), (7, False, "id7"), (40, False, None)]
    assert citations[3].problem == "the answer cites [7], a result that was not sent to the model"
    assert citations[4].problem == "the answer cites [40], which is not one of the results"
    assert parse_citations("no citations here, not even [x] or [ ]", _sources(3, 3)) == []


def test_images_are_downscaled_jpegs(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGBA", (1600, 900), (10, 200, 30, 255)).save(path)
    with Image.open(io.BytesIO(downscaled_jpeg(path))) as img:
        assert img.format == "JPEG" and img.size == (512, 288) and img.mode == "RGB"
    assert path.stat().st_size > 0 and Image.open(path).size == (1600, 900)  # the catalog file is untouched


def test_link_citations_point_at_the_cards() -> None:
    from rag.app.ask_view import link_citations

    text = link_citations("see [1] and [2, 9]", 12, _sources(10, 3))
    assert text == "see [\\[1\\]](#card-12-1) and [\\[2\\]](#card-12-2)\\[9\\]⚠"


# ---------------------------------------------------------------- through the engine


@pytest.fixture()
def engine(caption_sample24, text_model):
    """Per test: a CLI subprocess needs the embedded store free (one process at a time)."""
    from rag.search import SearchEngine

    with SearchEngine.open(caption_sample24[0], text_embedder=text_model) as opened:
        yield opened


def _expected(caption_sample24, text_model, query: str) -> list:
    from rag.search import SearchEngine

    with SearchEngine.open(caption_sample24[0], text_embedder=text_model) as opened:
        return opened.search(query, k=10).results


def _llm(server: FakeVLMServer, **kw) -> VisionChatLLM:
    return VisionChatLLM(base_url=server.base_url, model="fake-vlm", backoff_s=0.01, **kw)


def _user_parts(request) -> list[dict]:
    return request.body["messages"][-1]["content"]


def test_answer_streams_with_images_and_captions_attached(engine) -> None:
    conversation = Conversation()
    with FakeVLMServer([ANSWER]) as server:
        asker = Asker(engine, _llm(server), images=3)
        turn = asker.search(QUESTION, conversation, k=8)
        expected = engine.search(QUESTION, k=8)
        assert [s.id for s in turn.sources] == [r.id for r in expected.results]  # retrieval is the search itself
        deltas = list(asker.stream(turn, conversation))
        request = server.chat_requests[0]
    assert len(deltas) > 5 and "".join(deltas) == ANSWER == turn.answer  # streamed, not one block
    assert request.body["stream"] is True and request.model == "fake-vlm"
    parts = _user_parts(request)
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == 3 == len(turn.sent) and all(p["image_url"]["url"].startswith("data:image/jpeg;base64,") for p in images)
    for data in request.images:
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "JPEG" and max(img.size) <= 512
    texts = [p["text"] for p in parts if p["type"] == "text"]
    for source in turn.sent:  # each image follows its number and caption
        index = next(i for i, p in enumerate(parts) if p.get("text") == f"[{source.number}] {source.caption}")
        assert parts[index + 1]["type"] == "image_url"
    assert texts[0] == f"Question: {QUESTION}" and request.system.startswith("You answer questions about photos")
    assert [(c.number, c.sent) for c in turn.citations] == [(1, True), (2, True), (3, True), (7, False), (40, False)]
    assert conversation.turns == [turn]


def test_follow_up_refines_the_previous_turn(engine) -> None:
    conversation = Conversation()
    with FakeVLMServer([ANSWER, "Only [2] has two dogs."]) as server:
        asker = Asker(engine, _llm(server), images=2)
        first = asker.search(QUESTION, conversation)
        list(asker.stream(first, conversation))
        second = asker.search(FOLLOW_UP, conversation, follow_up=True)
        list(asker.stream(second, conversation))
        request = server.chat_requests[1]
    assert second.search_text == f"{QUESTION} {FOLLOW_UP}"
    assert [s.id for s in second.sources] == [r.id for r in engine.search(f"{QUESTION} {FOLLOW_UP}", k=10).results]
    roles = [m["role"] for m in request.body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert request.body["messages"][1]["content"].startswith(QUESTION)
    assert request.body["messages"][2]["content"] == ANSWER
    assert _user_parts(request)[0]["text"] == f"Question: {FOLLOW_UP}"
    assert len(conversation.turns) == 2 and second.answer == "Only [2] has two dogs."


def test_rate_limit_is_one_line_and_nothing_is_kept(engine) -> None:
    conversation = Conversation()
    with FakeVLMServer([Reply(status=429, text="slow down")] * 3 + ["Fine now [1]."]) as server:
        asker = Asker(engine, _llm(server, max_retries=2), images=2)
        turn = asker.search(QUESTION, conversation)
        with pytest.raises(VLMUnavailableError) as info:
            list(asker.stream(turn, conversation))
        message = str(info.value)
        assert "HTTP 429: slow down" in message and "gave up after 3 attempts" in message and "\n" not in message
        assert turn.error == message and not turn.answered and turn.answer == "" and conversation.turns == []
        assert len(server.chat_requests) == 3
        again = asker.search(QUESTION, conversation)
        assert "".join(asker.stream(again, conversation)) == "Fine now [1]."  # asked again, not served from anywhere
        assert len(server.chat_requests) == 4 and conversation.turns == [again]


def test_timeouts_before_and_during_the_answer(engine) -> None:
    conversation = Conversation()
    with FakeVLMServer([Reply("late", delay_s=2.0), Reply("one two three four", chunk_delay_s=0.8)]) as server:
        asker = Asker(engine, _llm(server, timeout_s=0.5, max_retries=0), images=1)
        turn = asker.search(QUESTION, conversation)
        with pytest.raises(VLMUnavailableError, match=r"timed out after 0.5 s; gave up after 1 attempt$"):
            list(asker.stream(turn, conversation))
        turn = asker.search(QUESTION, conversation)
        with pytest.raises(VLMUnavailableError, match="timed out after 0.5 s in the middle of the answer"):
            list(asker.stream(turn, conversation))
    assert not turn.answered and turn.citations == [] and conversation.turns == []


def test_without_an_endpoint_the_results_stand_alone(engine) -> None:
    conversation = Conversation()
    asker = Asker(engine, None)
    turn = asker.search(QUESTION, conversation)
    assert list(asker.stream(turn, conversation)) == [] and turn.error == NO_ENDPOINT and len(turn.sources) == 10
    assert conversation.turns == []


# ---------------------------------------------------------------- `mmrag ask`


def _cli(settings: Settings, *args: str, server: FakeVLMServer | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMRAG_", "OPENAI_"))}
    if server is not None:
        env.update(MMRAG_VLM_BASE_URL=server.base_url, MMRAG_VLM_MODEL="fake-vlm", MMRAG_VLM_TIMEOUT_S=str(timeout_s))
    return subprocess.run([sys.executable, "-m", "mmrag.cli", "ask", *args, "--data-dir", str(settings.data_dir)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_mmrag_ask_streams_cites_and_follows_up(caption_sample24, text_model) -> None:
    settings, _ = caption_sample24
    expected = _expected(caption_sample24, text_model, QUESTION)
    saved = settings.data_dir / "ask_conversation.json"
    with FakeVLMServer([ANSWER, "Only [1] has two dogs."] + [Reply(status=429)] * 3) as server:
        run = _cli(settings, QUESTION, "--images", "3", server=server)
        assert run.returncode == 0, run.stderr
        out = run.stdout.splitlines()
        assert out[0] == f"hybrid search for {QUESTION!r}: 10 result(s), 3 sent as images to fake-vlm"
        assert f"[1] {expected[0].path}" in out and f"[4] (not sent) {expected[3].path}" in out
        answer_at = out.index("answer:")
        assert out[answer_at + 1] == ANSWER
        assert out[answer_at + 2:] == [f"  cited [1] {expected[0].path}", f"  cited [2] {expected[1].path}",
                                       f"  cited [3] {expected[2].path}",
                                       "  warning: the answer cites [7], a result that was not sent to the model",
                                       "  warning: the answer cites [40], which is not one of the results"]
        assert len(server.chat_requests[0].images) == 3
        assert json.loads(saved.read_text())["turns"][0]["answer"] == ANSWER

        follow = _cli(settings, FOLLOW_UP, "--follow-up", "--json", server=server)
        data = json.loads(follow.stdout)
        assert follow.returncode == 0 and data["search_text"] == f"{QUESTION} {FOLLOW_UP}" and data["error"] is None
        assert data["answer"] == "Only [1] has two dogs." and data["citations"][0]["sent"] is True
        assert [m["role"] for m in server.chat_requests[1].body["messages"]] == ["system", "user", "assistant", "user"]
        kept = saved.read_text()
        assert len(json.loads(kept)["turns"]) == 2

        failed = _cli(settings, "and the cats?", "--follow-up", server=server)
        assert failed.returncode == 2 and "[1] " in failed.stdout  # the results are still shown
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mmrag: error: no answer: VLM endpoint") and "HTTP 429" in lines[0]
        assert saved.read_text() == kept  # the failed answer was not kept


def test_mmrag_ask_without_endpoint_and_bad_follow_up(caption_sample24, tmp_path: Path) -> None:
    settings, _ = caption_sample24
    run = _cli(settings, QUESTION)
    assert run.returncode == 0 and NO_ENDPOINT in run.stdout.splitlines() and "[1] " in run.stdout
    lonely = Settings(data_dir=tmp_path / "empty", clip_model=None)
    bad = _cli(lonely, FOLLOW_UP, "--follow-up")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "mmrag: error: no earlier answered question to follow up (none saved in the data dir): ask one first")


# ---------------------------------------------------------------- the app's Ask toggle (AppTest)



@pytest.fixture()
def app_env(caption_sample24, monkeypatch: pytest.MonkeyPatch):
    import streamlit as st

    for key in list(os.environ):
        if key.startswith(("MMRAG_", "OPENAI_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MMRAG_DATA_DIR", str(caption_sample24[0].data_dir))
    yield
    st.cache_resource.clear()  # closes the app's engine: the store is free for the next test


def _markdown(at) -> list[str]:
    return [m.value for m in at.markdown]


def test_app_ask_answers_with_linked_citations_and_follows_up(app_env, engine, monkeypatch) -> None:
    with FakeVLMServer([ANSWER, "Only [2] has two dogs."] + [Reply(status=429)] * 3) as server:
        monkeypatch.setenv("MMRAG_VLM_BASE_URL", server.base_url)
        monkeypatch.setenv("MMRAG_VLM_MODEL", "fake-vlm")
        monkeypatch.setenv("MMRAG_ASK_IMAGES", "3")
        at = start_app()
        at.toggle(key="ask_mode").set_value(True).run()
        at.chat_input(key="chat").set_value(QUESTION).run()
        assert not at.exception, [e.message for e in at.exception]
        turn = at.session_state["history"].last
        assert turn.ask.answered and [c.id for c in turn.results] == [r.id for r in engine.search(QUESTION, k=10).results]
        markdown = _markdown(at)
        assert any(f"[\\[1\\]](#card-{turn.id}-1)" in m and "\\[7\\]⚠" in m for m in markdown)
        assert sum(f'<a id="card-{turn.id}-' in m for m in markdown) == 10  # every card is a link target
        warnings = [w.value for w in at.warning]
        assert "the answer cites [7], a result that was not sent to the model" in warnings
        assert [c.value for c in at.caption].count("not sent to the model") == 7
        assert len(server.chat_requests[0].images) == 3

        at.chat_input(key="chat").set_value(FOLLOW_UP).run()  # right after an answer: a follow-up
        follow = at.session_state["history"].last
        assert follow.ask.search_text == f"{QUESTION} {FOLLOW_UP}" and follow.ask.answer == "Only [2] has two dogs."
        assert [m["role"] for m in server.chat_requests[1].body["messages"]] == ["system", "user", "assistant", "user"]
        assert len(server.chat_requests) == 2  # re-renders did not ask again

        monkeypatch.setenv("MMRAG_VLM_TIMEOUT_S", "60")
        at.chat_input(key="chat").set_value("and the cats?").run()
        failed = at.session_state["history"].last
        assert not failed.ask.answered and "HTTP 429" in failed.ask.error
        errors = [e.value for e in at.error]
        assert any(e.startswith("No answer: VLM endpoint") and "\n" not in e for e in errors)
        assert len(at.session_state["ask_conversation"].turns) == 2  # the error joined nothing


def test_app_ask_without_endpoint_says_so_and_shows_results(app_env) -> None:
    at = start_app()
    at.toggle(key="ask_mode").set_value(True).run()
    at.chat_input(key="chat").set_value(QUESTION).run()
    assert not at.exception
    assert NO_ENDPOINT in [i.value for i in at.info]
    assert len(at.session_state["history"].last.results) == 10


def test_app_no_good_match_shows_the_nearest_results_greyed(app_env, engine) -> None:
    kangaroo = "a kangaroo hopping through the outback"
    at = start_app()
    at.chat_input(key="chat").set_value(kangaroo).run()
    turn = at.session_state["history"].last
    expected = engine.search(kangaroo, k=10)
    assert expected.match == "none" and turn.match == "none"
    assert [c.id for c in turn.results] == [r.id for r in expected.results]  # the nearest results are still there
    assert [w.value for w in at.warning] == [f"No good match for “{kangaroo}”: nothing in the catalog scores above the "
                                             "no-match threshold. The nearest results are shown greyed below."]
    assert [c.value for c in at.caption].count("no good match") == len(expected.results)
    assert any('[class*="st-key-nomatch_"] img' in m and "grayscale" in m for m in _markdown(at))
    at.chat_input(key="chat").set_value(engine.search("dog", k=1).results[0].caption.split(".")[0]).run()
    assert at.session_state["history"].last.match == "good" and len(at.warning) == 1  # only the first turn's notice
