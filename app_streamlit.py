"""mmrag Streamlit app: chat-style hybrid image search and VLM visual inspection.

Start it with `mmrag app` (or `streamlit run app_streamlit.py --server.address 127.0.0.1`); settings come from
MMRAG_* variables. The search engine (Milvus + models) opens once per process through st.cache_resource.
"""

from __future__ import annotations

import atexit
import shutil
from pathlib import Path
from typing import Any

import streamlit as st

from rag.app.filters import ANY, filter_choices, format_filters, merge_filters, parse_filters
from rag.app.history import RETRIEVER_LABELS, History, ResultCard, Turn
from rag.app.index_info import (
    IndexInfo,
    empty_index_message,
    is_missing_index,
    last_index_time,
    read_index_state,
    store_error_message,
)
from rag.app.query_chips import chips_of, highlight, parts_of
from rag.app.thumbnails import ThumbnailCache
from rag.app.uploads import UPLOAD_TYPES, UploadLimits, new_upload_dir, save_upload
from rag.config import Settings, env_flag, env_value
from rag.errors import MmragError

MODE_LABELS = {"hybrid": "Hybrid (RRF)", "clip": "CLIP", "caption": "Caption", "bm25": "BM25", "ocr": "OCR text"}
GRID_COLUMNS = 5
MATCH_LABELS = {"weak": "weak match", "none": "no good match"}
# In a turn that found good matches, a card below every threshold is the weakest of them, not "no match" (the JSON
# keeps "none": each result's own verdict from its own scores).
MATCH_LABELS_IN_GOOD_TURN = {"weak": "weak match", "none": "weakest match"}
# Result grids of a "no good match" turn sit in containers keyed nomatch_<turn id>: grey their thumbnails.
NO_MATCH_CSS = '<style>[class*="st-key-nomatch_"] img { filter: grayscale(1); opacity: 0.45; }</style>'
MAX_FILTER_DROPDOWNS = 6


# ---------------------------------------------------------------- process-wide resources (opened once)


def _close(engine: Any) -> None:
    close = getattr(engine, "close", None)
    if callable(close):
        close()


@st.cache_resource(show_spinner="Opening the index and loading models (once per process)…", on_release=_close)
def open_engine(settings_key: str) -> Any:
    """The SearchEngine for the current MMRAG_* settings; settings_key only keys the cache."""
    from rag.search import SearchEngine, limit_query_threads  # imported here so the page renders while torch loads

    settings = Settings.from_env()
    engine = SearchEngine.open(settings, models_from_index=models_from_index())
    limit_query_threads(settings.query_threads)  # single queries: spinning thread pools cost 19x at p50 on a busy box
    return engine


def models_from_index() -> bool:
    """Like `mmrag search`: use the models the index was built with unless a model was chosen explicitly."""
    if env_value("MMRAG_MODELS_FROM_INDEX") is not None:
        return env_flag("MMRAG_MODELS_FROM_INDEX")
    return not (env_value("MMRAG_CLIP_MODEL") or env_value("MMRAG_TEXT_MODEL"))


@st.cache_resource
def thumbnail_cache(cache_dir: str) -> ThumbnailCache:
    return ThumbnailCache(Path(cache_dir))


def _remove_tree(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


@st.cache_resource(on_release=_remove_tree)
def upload_dir() -> Path:
    """One private temp folder per app process; uploads are named by content hash, removed at exit."""
    folder = new_upload_dir()
    atexit.register(_remove_tree, folder)
    return folder


def get_engine(settings: Settings) -> tuple[Any | None, str | None]:
    try:
        return open_engine(f"{settings!r}/{models_from_index()}"), None
    except MmragError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 — any failure to open becomes a one-line message, not a traceback
        return None, f"{type(exc).__name__}: {one_line(exc)}"


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "…"


def upload_limits() -> UploadLimits:
    try:
        mb = int(env_value("MMRAG_MAX_UPLOAD_MB", "10") or 10)
    except ValueError:
        mb = 10
    return UploadLimits(max_bytes=mb * 1024 * 1024)


# ---------------------------------------------------------------- session state


def history() -> History:
    if "history" not in st.session_state:
        st.session_state["history"] = History()
    return st.session_state["history"]


def queue_image_query(path: str) -> None:
    """on_click of a result's 'Similar' button: the next run searches with that image."""
    st.session_state["pending_image"] = path


def catalog_metadata(engine: Any) -> list[dict[str, Any]]:
    """A bounded sample of the catalog's rows (filter drop-downs): the catalog itself stays in Milvus."""
    return engine.store.sample()


def index_info(engine: Any, settings: Settings) -> IndexInfo:
    used = getattr(engine, "settings", settings)  # the engine's settings name the models it really loaded
    return IndexInfo(
        catalog_size=engine.count(),
        store_uri=settings.store_uri,
        embedded=settings.is_embedded,
        clip_model=used.clip_model if getattr(engine, "clip", None) is not None else None,
        text_model=getattr(engine.text_embedder, "model_name", used.text_model),
        available_modes=list(engine.available_modes),
        last_indexed=last_index_time(
            catalog_metadata(engine), settings.store_uri if settings.is_embedded else None, read_index_state(settings.data_dir)
        ),
    )


# ---------------------------------------------------------------- sidebar


def reload_index() -> None:
    open_engine.clear()  # on_release closes the engine, freeing an embedded store for `mmrag index`


def show_store_problem(where: Any, settings: Settings, error: str | None) -> None:
    """Why there is nothing to search, and the command(s) that fix it."""
    message, commands = store_error_message(settings, error or "not opened")
    (where.warning if is_missing_index(error or "") else where.error)(message)
    for command in commands:
        where.code(command, language="bash", wrap_lines=True)


def render_index_panel(settings: Settings, engine: Any | None, error: str | None) -> None:
    st.sidebar.subheader("Index")
    if engine is None:
        show_store_problem(st.sidebar, settings, error)
    else:
        info = index_info(engine, settings)
        st.sidebar.metric("Images in catalog", info.catalog_size)
        st.sidebar.caption(f"**Models** — {info.models_text}")
        st.sidebar.caption(f"**Store** — `{info.store_uri}` ({'embedded Milvus Lite' if info.embedded else 'server'})")
        st.sidebar.caption(f"**Last indexed** — {info.last_indexed_text}")
        st.sidebar.caption(f"**Modes** — {', '.join(info.available_modes)}")
        if info.embedded:
            st.sidebar.caption(
                "This app holds the embedded store, so `mmrag index` cannot write to it meanwhile: serve it with "
                "`milvus-lite server` and set MMRAG_URI to index while the app runs (see README)."
            )
    st.sidebar.button("Reload index", on_click=reload_index, key="reload", help="Reopen the store and reread the catalog")


def render_controls(engine: Any) -> dict[str, Any]:
    """Mode, k, filters and the query-image upload; returns the current choices."""
    sb = st.sidebar
    available = list(engine.available_modes) or ["hybrid"]
    order = ["hybrid"] + [m for m in available if m != "hybrid"]
    modes = [m for m in order if m in available]
    mode = sb.radio("Mode", modes, format_func=lambda m: MODE_LABELS.get(m, m), key="mode", horizontal=True)
    if "clip" not in engine.available_modes:
        sb.caption("CLIP is off (the index has no image vectors): image queries use the image's catalog caption.")
    k = sb.slider("Results (k)", 1, 50, 10, key="k")

    sb.markdown("**Filters**")
    choices = filter_choices(catalog_metadata(engine))
    picked = {}
    for key, values in list(choices.items())[:MAX_FILTER_DROPDOWNS]:
        picked[key] = sb.selectbox(key, [ANY, *values], key=f"filter_{key}")
    typed_text = sb.text_input("More filters", key="filters_text", placeholder="key=value; key2=value2")
    filter_error = None
    try:
        filters = merge_filters(picked, parse_filters(typed_text))
    except MmragError as exc:
        filters, filter_error = {}, str(exc)
        sb.error(filter_error)

    sb.markdown("**Image query**")
    limits = upload_limits()
    upload = sb.file_uploader(
        f"Query image ({', '.join(UPLOAD_TYPES)}; ≤ {limits.max_mb} MB)",
        type=list(UPLOAD_TYPES),
        max_upload_size=limits.max_mb,
        key="upload",
    )
    search_upload = sb.button("Search with this image", key="upload_search", disabled=upload is None)
    return {"mode": mode, "k": int(k), "filters": filters, "filter_error": filter_error,
            "upload": upload, "search_upload": search_upload, "limits": limits}  # fmt: skip


# ---------------------------------------------------------------- search tab


def run_search(engine: Any, controls: dict[str, Any], text: str | None, image: str | None,
               parts: list[Any] | None = None) -> Turn:
    turn = Turn(text=text, image_path=image, mode=controls["mode"], k=controls["k"], filters=dict(controls["filters"]),
                parts=list(parts or []))
    if controls["filter_error"]:
        turn.error = f"Not searched: {controls['filter_error']}"
        return turn
    try:
        response = engine.search(text, image=image, mode=turn.mode, k=turn.k, filters=turn.filters or None, parts=parts)
    except MmragError as exc:
        turn.error = str(exc)
    except Exception as exc:  # noqa: BLE001 — e.g. the Milvus server went away: one line in the chat, no traceback
        turn.error = f"search failed ({type(exc).__name__}: {one_line(exc)}); press Reload index if the store moved"
    else:
        turn.results = [ResultCard.from_result(r) for r in response.results]
        turn.timings_ms = dict(response.timings_ms)
        turn.parts, turn.negations = list(response.parts), list(response.negations)
        turn.match = getattr(response, "match", None)
    return turn


def render_card(card: ResultCard, turn_id: int, thumbs: ThumbnailCache, retrievers: list[str],
                ask: Any = None, turn_match: str | None = None) -> None:
    clip_on = "clip" in retrievers
    if ask is not None:  # an Ask turn: the answer's [n] links here
        from rag.app.ask_view import card_anchor

        st.markdown(f'<a id="{card_anchor(turn_id, card.rank)}"></a>', unsafe_allow_html=True)
    st.image(thumbs.get(card.path), caption=f"#{card.rank} · score {card.score:.4f}", width="stretch")
    st.caption(card.ranks_text(retrievers), help=card.caption or "(no caption)")
    if card.matched_terms:
        st.caption(f"matched: {', '.join(card.matched_terms)}")
    labels = MATCH_LABELS_IN_GOOD_TURN if turn_match == "good" else MATCH_LABELS
    if card.match in labels:
        st.caption(labels[card.match])
    if ask is not None and not any(s.sent and s.number == card.rank for s in ask.sources):
        st.caption("not sent to the model")
    with st.expander("Caption"):
        st.markdown(highlight(card.caption, card.matched_terms) if card.caption else "(no caption)")
        st.caption(Path(card.path).name)
    help_text = "Use this image as the next query" + ("" if clip_on else " (no CLIP: searches with its caption)")
    st.button("Similar images", key=f"similar_{turn_id}_{card.rank}", on_click=queue_image_query, args=(card.path,),
              help=help_text, type="tertiary")  # fmt: skip


def queue_parts(turn_id: int) -> None:
    """on_click of 'Search with these parts': the next run searches with the edited chips."""
    st.session_state["pending_parts"] = list(st.session_state.get(f"chips_{turn_id}", []))


def render_parts_editor(turn: Turn) -> None:
    """The latest query as chips: remove one, or type a new one ('- people', '2:beach'), then search again."""
    chips = chips_of(turn.parts)
    if turn.negations:
        st.caption("Negation found: " + ", ".join(f"“{n.cue} {n.text}” → − {n.text}" for n in turn.negations))
    st.multiselect("Query parts", chips, default=chips, key=f"chips_{turn.id}", accept_new_options=True,
                   help="Each chip is one part of the query: + looks for it, − excludes it, N: weighs it "
                        "(e.g. '- people', '2:beach'). Edit the chips, then search again.")
    st.button("Search with these parts", key=f"chips_go_{turn.id}", on_click=queue_parts, args=(turn.id,))


def run_parts_search(engine: Any, controls: dict[str, Any], chips: list[str]) -> Turn:
    try:
        parts = parts_of(chips)
    except MmragError as exc:
        return Turn(text=" ".join(chips) or None, image_path=None, mode=controls["mode"], k=controls["k"],
                    filters={}, error=str(exc))
    return run_search(engine, controls, None, None, parts=parts)


def render_turn(turn: Turn, thumbs: ThumbnailCache, retrievers: list[str], asker: Any = None,
                latest: bool = False) -> None:
    with st.chat_message("user"):
        if turn.image_path:
            st.image(thumbs.get(turn.image_path), width=140)
        st.markdown(turn.title if not turn.image_path else (turn.text or "Images like this one"))
        st.caption(f"{MODE_LABELS.get(turn.mode, turn.mode)} · k={turn.k}" + (f" · {format_filters(turn.filters)}" if turn.filters else ""))
    with st.chat_message("assistant"):
        if turn.error:
            st.error(turn.error)
            return
        if latest and turn.ask is None and turn.parts and (len(turn.parts) > 1 or not turn.image_path):
            render_parts_editor(turn)
        if turn.ask is not None:
            render_answer(turn, asker)
        if not turn.results:
            st.info("No results" + (" match these filters." if turn.filters else "."))
            return
        st.caption(turn.summary)
        render_match_notice(turn)
        grid = st.container(key=f"nomatch_{turn.id}" if turn.match == "none" else f"results_{turn.id}")
        for start in range(0, len(turn.results), GRID_COLUMNS):
            columns = grid.columns(GRID_COLUMNS)
            for column, card in zip(columns, turn.results[start : start + GRID_COLUMNS]):
                with column:
                    render_card(card, turn.id, thumbs, retrievers, turn.ask, turn.match)


def render_match_notice(turn: Turn) -> None:
    """Say so when nothing matched well (rag/match.py: the channels' own scores, not the fused score)."""
    what = f"“{turn.text}”" if turn.text else "this image"
    if turn.match == "none":
        st.warning(f"No good match for {what}: nothing in the catalog scores above the no-match threshold. "
                   "The nearest results are shown greyed below.")
    elif turn.match == "weak":
        st.info(f"Only weak matches for {what}: check the results before trusting them.")


def render_search_tab(settings: Settings, engine: Any, controls: dict[str, Any]) -> None:
    log = history()
    thumbs = thumbnail_cache(str(settings.data_dir / "thumbnails"))
    retrievers = list(engine.channel_names)  # ranks worth showing
    size = engine.count()
    if not size:
        message, commands = empty_index_message(settings)
        st.warning(message)
        for command in commands:
            st.code(command, language="bash", wrap_lines=True)
        return
    st.markdown(NO_MATCH_CSS, unsafe_allow_html=True)
    board = st.container()
    ask_on = st.toggle("Ask", key="ask_mode", help="Answer the question from the top results with the VLM "
                       f"(sends the top {settings.ask_images} images), citing them as [1], [2]…; a question right "
                       "after an answer refines it")  # fmt: skip
    prompt = st.chat_input("Describe the images you are looking for…", key="chat")
    asker = None
    if ask_on or any(t.ask_pending for t in log):
        from rag.ask import Asker
        from rag.errors import VLMUnavailableError

        try:
            asker = Asker(engine, ask_llm(settings), settings.ask_images)
        except VLMUnavailableError as exc:  # e.g. a base URL that is not http(s)
            asker = Asker(engine, None, settings.ask_images)
            st.error(str(exc))

    chips = st.session_state.pop("pending_parts", None)
    if chips is not None:
        log.add(run_parts_search(engine, controls, chips))
    pending = st.session_state.pop("pending_image", None)
    if pending:
        log.add(run_search(engine, controls, None, pending))
    if controls["search_upload"] and controls["upload"] is not None:
        upload = controls["upload"]
        try:
            path = save_upload(upload.name, upload.getvalue(), upload_dir(), controls["limits"])
        except MmragError as exc:
            log.add(Turn(text=None, image_path=None, mode=controls["mode"], k=controls["k"], filters={}, error=str(exc)))
        else:
            log.add(run_search(engine, controls, None, str(path)))
    if prompt and prompt.strip():
        if ask_on and asker is not None:
            log.add(run_ask(asker, controls, prompt.strip(), log))
        else:
            log.add(run_search(engine, controls, prompt.strip(), None))

    with board:
        if not len(log):
            st.caption(f"{size} images indexed. Type a query below, or upload an image in the sidebar.")
        for turn in log:
            render_turn(turn, thumbs, retrievers, asker, latest=turn is log.last)
        if len(log):
            st.button("Clear chat", key="clear_chat", on_click=clear_chat)


# ---------------------------------------------------------------- Ask: grounded answers (rag/ask.py)


def ask_llm(settings: Settings) -> Any:
    """The configured vision endpoint as a LlamaIndex LLM, or None (Ask then shows the search results only)."""
    from rag.vision_llm import VisionChatLLM

    return VisionChatLLM.from_settings(settings) if settings.vlm_base_url and settings.vlm_model else None


def conversation() -> Any:
    from rag.ask import Conversation

    if "ask_conversation" not in st.session_state:
        st.session_state["ask_conversation"] = Conversation()
    return st.session_state["ask_conversation"]


def clear_chat() -> None:
    history().clear()
    st.session_state.pop("ask_conversation", None)


def run_ask(asker: Any, controls: dict[str, Any], question: str, log: History) -> Turn:
    """Search for an Ask question; the answer streams when the turn renders. Right after an answered Ask turn,
    the question is a follow-up that refines it; otherwise a new conversation starts."""
    from rag.ask import Conversation

    turn = Turn(text=question, image_path=None, mode=controls["mode"], k=controls["k"], filters=dict(controls["filters"]))
    if controls["filter_error"]:
        turn.error = f"Not asked: {controls['filter_error']}"
        return turn
    previous = log.last
    follow_up = bool(previous is not None and previous.ask is not None and previous.ask.answered)
    if not follow_up:
        st.session_state["ask_conversation"] = Conversation()
    try:
        turn.ask = asker.search(question, conversation(), follow_up=follow_up, mode=turn.mode, k=turn.k,
                                filters=turn.filters or None)
    except MmragError as exc:
        turn.error = str(exc)
        return turn
    except Exception as exc:  # noqa: BLE001 — one line in the chat, no traceback
        turn.error = f"search failed ({type(exc).__name__}: {one_line(exc)}); press Reload index if the store moved"
        return turn
    turn.results = [ResultCard.from_result(r) for r in turn.ask.response.results]
    turn.timings_ms = dict(turn.ask.response.timings_ms)
    turn.match = turn.ask.response.match
    turn.ask_pending = True
    return turn


def render_answer(turn: Turn, asker: Any) -> None:
    """Stream the answer once (the turn's first render), then show it with citations linked to the cards."""
    from rag.app.ask_view import link_citations
    from rag.ask import NO_ENDPOINT
    from rag.errors import VLMUnavailableError

    ask = turn.ask
    if ask.search_text != ask.question:
        st.caption(f"Follow-up: searched for “{ask.search_text}”")
    box = st.empty()
    if turn.ask_pending and asker is not None:
        turn.ask_pending = False
        try:
            box.write_stream(asker.stream(ask, conversation()))
        except VLMUnavailableError:
            pass  # ask.error holds the one line
        except Exception as exc:  # noqa: BLE001 — never a traceback in the chat
            ask.error = f"no answer ({type(exc).__name__}: {one_line(exc)})"
    if ask.error == NO_ENDPOINT:
        box.info(NO_ENDPOINT)
    elif ask.error:
        box.error(f"No answer: {ask.error}")
    elif ask.answered:
        box.markdown(link_citations(ask.answer, turn.id, ask.sources))
        for citation in ask.flagged:
            st.warning(citation.problem)


# ---------------------------------------------------------------- inspection tab


@st.cache_resource(show_spinner=False)
def inspection_set() -> Any:
    from rag.app.inspection_support import load_inspection_set

    return load_inspection_set()


def pick_inspection_image(dataset: Any) -> tuple[Path | None, Any, Path | None]:
    """(image path, gold label or None, PCB template or None) from the set or an upload."""
    origin = st.radio("Image", ["From the inspection set", "Upload"], key="insp_origin", horizontal=True)
    if origin == "Upload":
        limits = upload_limits()
        upload = st.file_uploader(f"Image to inspect (≤ {limits.max_mb} MB)", type=list(UPLOAD_TYPES),
                                  max_upload_size=limits.max_mb, key="insp_upload")  # fmt: skip
        if upload is None:
            return None, None, None
        data = upload.getvalue()
        try:
            path = save_upload(upload.name, data, upload_dir(), limits)
        except MmragError as exc:
            st.error(str(exc))
            return None, None, None
        known = dataset.match_bytes(data) if dataset is not None else None
        if known:  # an uploaded copy of a labelled image keeps its gold label and template
            st.caption(f"Same bytes as labelled image {known}: its gold label is shown.")
            label = dataset.labels[known]
            return path, label, dataset.template(label)
        return path, None, None
    if dataset is None:
        return None, None, None
    files = dataset.available()
    file = st.selectbox(f"Labelled image ({len(files)})", files, key="insp_file",
                        format_func=lambda f: f"{Path(f).name} — {dataset.labels[f].source}")  # fmt: skip
    label = dataset.labels[file]
    return dataset.path(file), label, dataset.template(label)


def render_inspection_result(result: Any) -> None:
    from rag.app.inspection_support import STATUS_WORDS, answer_text, gold_text

    if result.vlm_note:
        st.info(f"{result.vlm_note} — showing the pixel baseline instead.")
    left, right = st.columns([3, 2])
    with left:
        st.image(result.overlay, caption="green: gold boxes · red: predicted (dashed orange: grid cells)")
    with right:
        st.markdown(f"**Answer — {result.who}**")
        st.markdown(answer_text(result.answer))
        if result.answer.raw:
            with st.expander("Raw VLM reply"):
                st.code(result.answer.raw, language=None, wrap_lines=True)
        st.markdown("**Gold label**")
        if result.label is None:
            st.caption("No gold label for this image: the answer is not scored.")
        else:
            st.markdown(gold_text(result.label))
            if result.label.note:
                st.caption(result.label.note)
            status = result.outcome.status
            st.markdown(f"**Score:** {status} — {STATUS_WORDS.get(status, status)}")
            if result.outcome.gold_boxes and status in ("TP", "FP"):
                hit = sum(g.hit for g in result.outcome.gold_boxes)
                st.caption(f"{hit}/{len(result.outcome.gold_boxes)} gold boxes hit by a predicted box")


def render_inspection_tab(settings: Settings) -> None:
    from rag.app.inspection_support import inspect, vlm_client
    from rag.inspection.crops import CROP_SPECS
    from rag.inspection.prompts import VARIANTS, prompt_text

    try:
        dataset = inspection_set()
    except MmragError as exc:
        dataset = None
        st.warning(f"No labelled inspection set: {exc}")
    client, _ = vlm_client(settings)
    st.caption(f"VLM: {client.model} at {client.base_url}" if client else
               "VLM not configured (MMRAG_VLM_BASE_URL, MMRAG_VLM_MODEL): Inspect runs the pixel baseline.")  # fmt: skip
    path, label, template = pick_inspection_image(dataset)
    prompt_col, crop_col = st.columns(2)
    prompt = prompt_col.selectbox("Prompt", VARIANTS, index=VARIANTS.index("structured"), key="insp_prompt")
    crops = crop_col.radio("Crops (zoomed tiles)", CROP_SPECS, key="insp_crops", horizontal=True,
                           help="Ask about each overlapping tile separately and merge the answers")  # fmt: skip
    with st.expander("Prompt text"):
        st.code(prompt_text(prompt), language=None, wrap_lines=True)
    if st.button("Inspect", key="insp_run", type="primary", disabled=path is None):
        try:
            with st.spinner("Inspecting…"):
                result = inspect(settings, path, prompt=prompt, crops=crops, label=label, template=template)
        except MmragError as exc:
            st.session_state.pop("insp_result", None)
            st.error(str(exc))
        else:
            st.session_state["insp_result"] = (str(path), prompt, crops, result)
    shown = st.session_state.get("insp_result")
    if shown and shown[:3] == (str(path), prompt, crops):  # only while the same choice is on screen
        render_inspection_result(shown[3])


# ---------------------------------------------------------------- page


def main() -> None:
    st.set_page_config(page_title="mmrag", page_icon="🔎", layout="wide")
    settings = Settings.from_env()
    engine, error = get_engine(settings)
    st.sidebar.title("mmrag")
    controls = render_controls(engine) if engine is not None else None
    render_index_panel(settings, engine, error)

    search_tab, inspect_tab = st.tabs(["Search", "Inspection"])
    with search_tab:
        if engine is None:
            show_store_problem(st, settings, error)
        else:
            render_search_tab(settings, engine, controls)
    with inspect_tab:
        render_inspection_tab(settings)


main()
