"""The app's query chips (composite queries, negation) and matched-term highlights: pure helpers, then AppTest
runs of the real app over the example catalog indexed caption-side (40 real photos, MiniLM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import EXAMPLE_CATALOG, start_app
from rag.app.query_chips import chips_of, highlight, parts_of
from rag.channels import QueryPart
from rag.config import Settings
from rag.errors import MmragError

APP_ENV_KEYS = ("MMRAG_URI", "MMRAG_CLIP_MODEL", "MMRAG_TEXT_MODEL", "MMRAG_MODELS_FROM_INDEX", "MMRAG_VLM_BASE_URL",
                "MMRAG_VLM_MODEL", "OPENAI_BASE_URL", "MMRAG_FUSION_WEIGHTS", "MMRAG_COLLECTION_PREFIX")  # fmt: skip


def test_highlight_bolds_matched_words_and_escapes_the_rest() -> None:
    text = highlight("Two dogs* run on [grass], a dog_park.", ["dog", "grass"])
    assert text == r"Two **dogs**\* run on \[**grass**\], a **dog**\_park\."
    assert highlight("A cat.", []) == r"A cat\."


def test_chips_round_trip_and_errors() -> None:
    parts = [QueryPart("a street"), QueryPart("people", weight=-1.0), QueryPart("car", weight=2.0)]
    assert chips_of(parts) == ["+ a street", "- people", "+ 2:car"]
    assert parts_of(chips_of(parts)) == parts
    assert parts_of(["beach", "-dogs"]) == [QueryPart("beach"), QueryPart("dogs", weight=-1.0)]
    with pytest.raises(MmragError, match="no query parts"):
        parts_of([])
    with pytest.raises(MmragError, match="only negative"):
        parts_of(["- people"])
    with pytest.raises(MmragError, match="bad weight"):
        parts_of(["0:dog"])


@pytest.fixture(scope="module")
def example_index(tmp_path_factory, text_model):
    from ingest.pipeline import index_folder

    settings = Settings(data_dir=tmp_path_factory.mktemp("app_query") / "data", clip_model=None)
    report = index_folder(EXAMPLE_CATALOG / "images", settings, metadata=EXAMPLE_CATALOG / "metadata.jsonl",
                          show_progress=False, text_embedder=text_model)
    assert report.total_in_store == 40
    with pytest.MonkeyPatch.context() as env:
        for key in APP_ENV_KEYS:
            env.delenv(key, raising=False)
        env.setenv("MMRAG_DATA_DIR", str(settings.data_dir))
        yield settings
    import streamlit as st

    st.cache_resource.clear()  # closes the app's engine: the store is free again


@pytest.fixture(scope="module")
def engine(example_index, text_model):
    from rag.search import SearchEngine

    with SearchEngine.open(example_index, text_embedder=text_model) as opened:
        yield opened


def _chips(at):
    return [m for m in at.multiselect if m.key and m.key.startswith("chips_")]


@pytest.mark.slow
def test_negation_shows_chips_and_highlights(example_index, engine) -> None:
    at = start_app()
    at.chat_input(key="chat").set_value("a street with no people").run()
    assert not at.exception
    turn = at.session_state["history"].last
    expected = engine.search("a street with no people", k=10)
    assert [c.id for c in turn.results] == [r.id for r in expected.results]
    assert [(p.text, p.weight) for p in turn.parts] == [("a street", 1.0), ("people", -1.0)]
    (chips,) = _chips(at)
    assert chips.value == ["+ a street", "- people"]
    assert any("Negation found" in c.value and "no people" in c.value for c in at.caption)
    # every card's caption shows its matched terms in bold, and lists them
    matched = [c for c in turn.results if c.matched_terms]
    assert matched and all(c.matched_terms == r.matched_terms for c, r in zip(turn.results, expected.results))
    shown = [m.value for m in at.main.markdown if "**" in m.value]
    assert len(shown) == len(matched) and all("**street" in v.lower() for v in shown)
    assert sum(1 for c in at.caption if c.value.startswith("matched: ")) == len(matched)


@pytest.mark.slow
def test_edited_chips_search_again(example_index, engine) -> None:
    at = start_app()
    at.chat_input(key="chat").set_value("2:kitchen + oven").run()
    (chips,) = _chips(at)
    assert chips.value == ["+ 2:kitchen", "+ oven"]
    chips.set_value(["+ 2:kitchen", "- person", "refrigerator"])
    at.button(key=chips.key.replace("chips_", "chips_go_")).click().run()
    assert not at.exception
    log = at.session_state["history"]
    assert len(log) == 2
    parts = [QueryPart("kitchen", weight=2.0), QueryPart("person", weight=-1.0), QueryPart("refrigerator")]
    assert log.last.parts == parts and not log.last.error
    expected = engine.search(None, parts=parts, k=10)
    assert [c.id for c in log.last.results] == [r.id for r in expected.results]
    assert log.last.title == "2:kitchen - person + refrigerator"
    (chips,) = _chips(at)  # only the latest turn is editable
    assert chips.value == ["+ 2:kitchen", "- person", "+ refrigerator"]
    # a bad chip is one line in the chat, nothing searched
    chips.set_value(["- person"])
    at.button(key=chips.key.replace("chips_", "chips_go_")).click().run()
    assert at.session_state["history"].last.error == "only negative query parts: add something to look for"
    assert any("only negative" in e.value for e in at.error)


@pytest.mark.slow
def test_bad_composite_query_is_one_line(example_index) -> None:
    at = start_app()
    at.chat_input(key="chat").set_value("dog + + beach").run()
    turn = at.session_state["history"].last
    assert "two operators in a row" in turn.error and not turn.results
    assert any("two operators in a row" in e.value for e in at.error)
