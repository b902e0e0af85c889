"""Render the retrieval eval results document as Markdown + JSON + PNGs, with a failure analysis.

Everything here reads the dict built by `eval.retrieval_eval.run_experiments` (saved whole as
OUT/_work/full_results.json, slimmed as OUT/results.json), so a report can be re-rendered without
re-running searches:
    .venv/bin/python -m eval.retrieval_report [--out eval/reports/retrieval]
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eval import plots
from eval.gold import GoldQuery, GoldSet, expr_categories
from eval.match_report import no_match_markdown
from eval.metrics import METRICS, paired_sign_flip_p
from eval.query_report import render_query_tables, slim_query_tables
from eval.retrieval_eval import PRIMARY_FORM, SINGLE_RETRIEVERS, Catalog

METRIC_LABEL = {"p@5": "P@5", "r@5": "R@5", "r@10": "R@10", "mrr": "MRR", "ndcg@10": "nDCG@10"}

# Words a caption uses for a COCO category (beyond the category name itself), for "does the caption mention it".
CATEGORY_TERMS: dict[str, tuple[str, ...]] = {
    "person": ("person", "people", "man", "men", "woman", "women", "boy", "girl", "child", "children", "kid", "player",
               "guy", "lady", "crowd", "skier", "surfer", "skateboarder", "rider"),
    "airplane": ("airplane", "plane", "jet", "airliner", "aircraft"),
    "motorcycle": ("motorcycle", "motorbike", "motor bike", "scooter", "moped"),
    "bicycle": ("bicycle", "bike", "cyclist"),
    "cell phone": ("cell phone", "cellphone", "phone", "smartphone", "mobile"),
    "tv": ("tv", "television", "monitor", "screen"),
    "refrigerator": ("refrigerator", "fridge", "freezer"),
    "donut": ("donut", "doughnut"),
    "hair drier": ("hair drier", "hair dryer", "blow dryer", "hairdryer"),
    "sports ball": ("ball", "soccer ball", "football", "tennis ball", "basketball"),
    "couch": ("couch", "sofa", "loveseat"),
    "dining table": ("table",),
    "handbag": ("handbag", "purse", "bag"),
    "backpack": ("backpack", "back pack", "rucksack"),
    "tie": ("tie", "necktie"),
    "remote": ("remote", "controller"),
    "cow": ("cow", "cattle", "bull", "calf", "calves"),
    "sheep": ("sheep", "lamb", "flock"),
    "bird": ("bird", "pigeon", "seagull", "gull", "duck", "goose", "parrot"),
    "boat": ("boat", "ship", "sailboat", "kayak", "canoe", "yacht", "ferry"),
    "baseball bat": ("bat", "baseball"),
    "baseball glove": ("glove", "mitt", "baseball"),
    "keyboard": ("keyboard",),
    "mouse": ("mouse",),
    "laptop": ("laptop", "computer", "notebook"),
    "dog": ("dog", "puppy", "pup"),
    "cat": ("cat", "kitten", "kitty"),
    "car": ("car", "vehicle", "taxi", "suv"),
    "bus": ("bus",),
    "truck": ("truck",),
    "clock": ("clock",),
    "book": ("book", "bookshelf", "novel"),
    "teddy bear": ("teddy", "stuffed bear", "stuffed animal"),
    "bear": ("bear",),
    "traffic light": ("traffic light", "stop light", "stoplight", "traffic signal"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter", "meter"),
    "skateboard": ("skateboard", "skate board"),
    "surfboard": ("surfboard", "surf board", "surfer", "surfing"),
    "toothbrush": ("toothbrush", "tooth brush"),
}
_WORD_CACHE: dict[str, re.Pattern[str]] = {}
# Look-alike categories: a wrong hit showing one of these instead of the queried object is a confusion.
CONFUSABLE: dict[str, tuple[str, ...]] = {
    "motorcycle": ("bicycle",), "bicycle": ("motorcycle",), "bear": ("teddy bear", "dog"), "teddy bear": ("bear",),
    "car": ("truck", "bus"), "truck": ("car", "bus"), "bus": ("truck", "train"), "train": ("bus",),
    "cow": ("sheep", "horse"), "sheep": ("cow",), "horse": ("cow", "zebra"), "zebra": ("horse", "giraffe"),
    "giraffe": ("zebra", "elephant"), "elephant": ("giraffe",), "cat": ("dog",), "dog": ("cat", "bear"),
    "laptop": ("keyboard", "tv"), "tv": ("laptop",), "keyboard": ("laptop",), "donut": ("cake",), "cake": ("donut",),
    "refrigerator": ("oven", "microwave"), "oven": ("microwave", "refrigerator"), "skateboard": ("surfboard", "snowboard"),
    "surfboard": ("skateboard", "boat"), "handbag": ("suitcase", "backpack"), "backpack": ("handbag", "suitcase"),
    "cell phone": ("remote",), "remote": ("cell phone",), "spoon": ("fork", "knife"), "knife": ("fork", "spoon"),
    "bottle": ("cup", "wine glass"), "cup": ("bottle", "wine glass"), "chair": ("couch", "bench"), "couch": ("chair", "bed"),
    "bed": ("couch",), "airplane": ("bird", "kite"), "bird": ("airplane", "kite"), "boat": ("surfboard",),
    "traffic light": ("stop sign",), "stop sign": ("traffic light",), "sports ball": ("frisbee",), "toilet": ("sink",),
    "sink": ("toilet",), "pizza": ("sandwich", "cake"), "broccoli": ("potted plant",), "banana": ("orange", "apple"),
}
_STOP = set("a an the of on in at to with and or by for from is are its it this that near next no without some "
            "his her their there up down out into over under very while".split())


def shared_words(query: str, text: str) -> list[str]:
    """Content words the query and the caption text have in common (plural-insensitive)."""
    def words(t: str) -> set[str]:
        return {w.rstrip("s") for w in re.findall(r"[a-z]+", t.lower()) if w not in _STOP and len(w) > 2}
    return sorted(words(query) & words(text))


def mentions(text: str, category: str) -> bool:
    """Whether text names the category (or a usual synonym), plural forms included."""
    pattern = _WORD_CACHE.get(category)
    if pattern is None:
        terms = CATEGORY_TERMS.get(category, (category,))
        pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in terms) + r")(s|es)?\b", re.IGNORECASE)
        _WORD_CACHE[category] = pattern
    if category == "bear":  # a 'teddy bear' is not a bear
        return bool(re.search(r"(?<!teddy )\bbears?\b", text, re.IGNORECASE))
    return bool(pattern.search(text))


def mention_word(text: str, category: str) -> str | None:
    """The word in text that names the category (see `mentions`), lower-cased."""
    if not mentions(text, category):
        return None
    m = _WORD_CACHE[category].search(text) if category in _WORD_CACHE else None
    return m.group(0).lower() if m else category


# ---------------------------------------------------------------- tables


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "—"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _row_cells(run: dict[str, Any] | None, status: str) -> list[str]:
    s = (run or {}).get("summary", {})
    quality = status == "ok"
    cells = [_fmt(s.get(m)) if quality else "—" for m in METRICS]
    if quality and s.get("ndcg@10_ci95"):
        lo, hi = s["ndcg@10_ci95"]
        cells[-1] += f" ({lo:.2f}–{hi:.2f})"
    speed = run is not None and not status.startswith("not run")
    cells += [_fmt(s.get("p50_ms"), 1) if speed else "—", _fmt(s.get("p95_ms"), 1) if speed else "—"]
    cells.append(_fmt(s.get("unjudged_top10"), 2) if quality else "—")
    cells.append(status if status != "ok" else "measured")
    return cells


def results_table(doc: dict[str, Any], table: str, *, first_col: str = "configuration",
                  extra_rows: Sequence[tuple[str, str | None, str]] = ()) -> str:
    header = [first_col, *(METRIC_LABEL[m] for m in METRICS), "p50 ms", "p95 ms", "unjudged@10", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [(r["label"], r["key"], r["status"]) for r in doc["tables"].get(table, [])] + list(extra_rows)
    for label, key, status in rows:
        run = doc["runs"].get(key) if key else None
        lines.append("| " + " | ".join([label, *_row_cells(run, status)]) + " |")
    return "\n".join(lines)


def tag_table(doc: dict[str, Any], gold: GoldSet, keys: Sequence[tuple[str, str]], metric: str = "ndcg@10") -> str:
    """Mean metric per query tag (rows) for a few runs (columns)."""
    tags = sorted({t for q in gold.queries for t in q.tags})
    by_id = {q.id: q for q in gold.queries}
    header = ["tag", "queries", *(label for label, _ in keys)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for tag in tags:
        ids = {q.id for q in gold.queries if tag in q.tags}
        cells = [tag, str(len(ids))]
        for _, key in keys:
            vals = [pq["metrics"][metric] for pq in doc["runs"][key]["per_query"] if pq["id"] in ids and pq["id"] in by_id]
            cells.append(_fmt(float(np.mean(vals))) if vals else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ok_key(doc: dict[str, Any], table: str, label: str) -> str | None:
    for r in doc["tables"].get(table, []):
        if r["label"] == label and r["status"] == "ok":
            return r["key"]
    return None


def _per_query(doc: dict[str, Any], key: str, metric: str) -> dict[str, float]:
    return {pq["id"]: pq["metrics"][metric] for pq in doc["runs"][key]["per_query"]}


# ---------------------------------------------------------------- failure analysis


def _captions(row: dict[str, Any]) -> list[str]:
    return [c for c in row.get("captions", []) if c]


def best_caption(row: dict[str, Any], query: str) -> str:
    """The caption sharing most words with the query (the first one on ties); '(no caption)' if none."""
    caps = _captions(row)
    if not caps:
        return "(no caption)"
    return max(caps, key=lambda c: (len(shared_words(query, c)), -caps.index(c)))


def _ranks_of(doc: dict[str, Any], form: str, qid: str, file: str) -> dict[str, int | None]:
    rankings = doc.get("rankings", {}).get(form, {})
    return {m: rankings[m].get(qid, {}).get(file) for m in SINGLE_RETRIEVERS if m in rankings}


def _fmt_ranks(ranks: dict[str, int | None]) -> str:
    return ", ".join(f"{m} {r if r is not None else '>all'}" for m, r in ranks.items()) or "no single-retriever ranks"


def classify_miss(q: GoldQuery, row: dict[str, Any], ranks: dict[str, int | None]) -> tuple[str, str, str]:
    """(cause id, blamed retriever(s), why) for a relevant image missing from the judged top-10."""
    pos, _ = expr_categories(q.expr)
    caps = _captions(row)
    present = [c for c in pos if c in row.get("categories", [])]
    if not caps:
        return ("no-caption", "caption + bm25",
                "the image has no catalog caption (one of the 85 COCO images with categories but no captions): its caption "
                "text is only the filename fallback, so the caption vector and BM25 have nothing to match; only CLIP could find it")
    text = " ".join(caps)
    unmentioned = [c for c in present if not mentions(text, c)]
    if unmentioned:
        counts = row.get("category_counts", {})
        detail = ", ".join(f"{c} (annotated x{counts.get(c, 1)})" for c in unmentioned)
        return ("caption-omits", "caption + bm25",
                f"none of its 5 captions mentions {detail}: the object is present but not what people described "
                f"(small, background or occluded), so text retrieval cannot see it")
    cap, bm = ranks.get("caption"), ranks.get("bm25")
    if "bm25" in ranks and bm is None:
        said = [mention_word(text, c) for c in present]
        said = [w for w in said if w]
        return ("vocabulary-mismatch", "bm25 (+ caption)",
                f"its captions name the object as {', '.join(repr(w) for w in said[:2]) or 'a synonym'}, a word the query "
                f"does not use, so BM25 scores it 0; the caption vector bridges the synonym only partly (rank {cap or 'none'})")
    if cap is not None and cap <= 10 and (bm is None or bm > 10):
        return ("fusion-diluted", "bm25 (via fusion)",
                f"the caption retriever had it at rank {cap}, but BM25 ranked it {bm or 'nowhere'}, and fusion pushed it out of the top 10")
    if bm is not None and bm <= 10 and (cap is None or cap > 10):
        return ("fusion-diluted", "caption (via fusion)",
                f"BM25 had it at rank {bm}, but the caption vector ranked it {cap or 'nowhere'}, and fusion pushed it out of the top 10")
    return ("outranked", "caption + bm25",
            "its captions do mention the object, but as a side detail: images whose captions are about it rank higher "
            "(recall is capped by how many relevant images there are vs. k)")


def classify_wrong(q: GoldQuery, row: dict[str, Any], ranks: dict[str, int | None]) -> tuple[str, str, str]:
    """(cause id, blamed retriever, why) for a judged non-relevant image in the top-5."""
    pos, neg = expr_categories(q.expr)
    cats = row.get("categories", [])
    text = " ".join(_captions(row))
    shown = {m: r for m, r in ranks.items() if r is not None}
    blamed = min(shown, key=shown.get) if shown else "fusion"
    if neg and any(c in cats for c in neg):
        hit = [c for c in neg if c in cats]
        return ("negation", blamed, f"the query excludes {', '.join(hit)}, but the image contains it: neither embedding "
                                    "nor BM25 models negation ('no people' still matches 'people')")
    have = [c for c in pos if c in cats]
    if len(pos) > 1 and have:
        lack = [c for c in pos if c not in cats]
        swapped = [(c, o) for c in lack for o in CONFUSABLE.get(c, ()) if o in cats and mentions(text, c)]
        if swapped:
            c, o = swapped[0]
            return ("look-alike", blamed, f"its captions call the {o} a {c}: people and COCO's labels disagree on a "
                                          f"look-alike, so the text side matches a {c} that the gold labels do not have")
        return ("half-conjunction", blamed, f"it has {', '.join(have)} but no {', '.join(lack)}: the retrievers score a bag of "
                                            "concepts, so one strong match outranks images that have both")
    trap = [c for c in pos if re.search(rf"\b{re.escape(c)}", text, re.IGNORECASE) and any(c != o and c in o for o in cats)]
    if trap:
        return ("lexical-trap", blamed, f"its captions say '{trap[0]}' as part of another object "
                                        f"({', '.join(o for o in cats if trap[0] in o)}): a word match, not the object")
    lookalike = [(c, o) for c in pos if c not in cats for o in CONFUSABLE.get(c, ()) if o in cats]
    if lookalike:
        c, o = lookalike[0]
        return ("look-alike", blamed, f"it shows a {o}, a look-alike of the queried {c}: the query and the caption are "
                                      f"close in meaning ({_words_note(q, text)}), and nothing in the text side separates them")
    said = [c for c in pos if mentions(text, c)]
    if said:
        return ("annotation-gap", blamed, f"its captions mention {', '.join(said)} but COCO has no such box: either an "
                                          "unannotated / depicted object (picture, toy, sign) or a gold-label gap")
    if not text:
        return ("no-caption-noise", blamed, "an image with no caption (filename text only) ranked by noise")
    return ("topical-neighbour", blamed, f"its captions describe a related scene without the queried object "
                                         f"({_words_note(q, text)})")


def _words_note(q: GoldQuery, text: str) -> str:
    common = shared_words(q.descriptive + " " + q.short, text)
    return ("shared words: " + ", ".join(f"'{w}'" for w in common[:4])) if common else "no word in common: similar meaning only"


def failures(doc: dict[str, Any], gold: GoldSet, catalog: Catalog, key: str, form: str = PRIMARY_FORM) -> list[dict[str, Any]]:
    """Per query: misses (relevant outside the judged top-10) and wrong hits (judged non-relevant in the top-5)."""
    rows = {r["file"]: r for r in catalog.rows}
    run = doc["runs"][key]
    by_id = {q.id: q for q in gold.queries}
    out = []
    for pq in run["per_query"]:
        q = by_id[pq["id"]]
        top10 = pq["judged_top10"]
        misses, wrong = [], []
        for f in sorted(q.relevant - set(top10)):
            ranks = _ranks_of(doc, form, q.id, f)
            cause, blamed, why = classify_miss(q, rows[f], ranks)
            misses.append({"file": f, "ranks": ranks, "cause": cause, "blamed": blamed, "why": why})
        for pos, f in enumerate(top10[:5], 1):
            if f in q.relevant:
                continue
            ranks = _ranks_of(doc, form, q.id, f)
            cause, blamed, why = classify_wrong(q, rows[f], ranks)
            wrong.append({"file": f, "judged_rank": pos, "ranks": ranks, "cause": cause, "blamed": blamed, "why": why})
        out.append({"id": q.id, "text": pq["text"], "ndcg@10": pq["metrics"]["ndcg@10"], "n_relevant": len(q.relevant),
                    "misses": misses, "wrong_hits": wrong})
    return out


def named_failures(fails: list[dict[str, Any]], catalog: Catalog, n: int = 6) -> list[dict[str, Any]]:
    """Pick n illustrative failures with distinct causes: the most severe example of each cause."""
    rows = {r["file"]: r for r in catalog.rows}
    candidates: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for f in fails:
        for w in f["wrong_hits"]:
            candidates.setdefault(w["cause"], []).append((10 - w["judged_rank"] + (1 - f["ndcg@10"]), {**w, "kind": "wrong hit", "query": f}))
        share = Counter(m["cause"] for m in f["misses"])
        for m in f["misses"]:
            severity = share[m["cause"]] / max(1, f["n_relevant"]) * 5 + (1 - f["ndcg@10"])
            candidates.setdefault(m["cause"], []).append((severity, {**m, "kind": "miss", "query": f}))
    picked = []
    used_queries: set[str] = set()
    order = sorted(candidates, key=lambda c: -max(s for s, _ in candidates[c]))
    for cause in order:
        best = sorted(candidates[cause], key=lambda t: -t[0])
        choice = next((item for _, item in best if item["query"]["id"] not in used_queries), best[0][1])
        used_queries.add(choice["query"]["id"])
        row = rows[choice["file"]]
        picked.append({**choice, "categories": row.get("categories", []), "caption": best_caption(row, choice["query"]["text"])})
    # fill up with the next most severe distinct (query, cause) pairs
    rest = sorted(((s, item) for c in candidates for s, item in candidates[c]), key=lambda t: -t[0])
    for _, item in rest:
        if len(picked) >= n:
            break
        if item["query"]["id"] in used_queries:
            continue
        used_queries.add(item["query"]["id"])
        row = rows[item["file"]]
        picked.append({**item, "categories": row.get("categories", []), "caption": best_caption(row, item["query"]["text"])})
    return picked[: max(n, len(order))]


def cause_counts(fails: list[dict[str, Any]]) -> dict[str, Counter]:
    return {"misses": Counter(m["cause"] for f in fails for m in f["misses"]),
            "wrong_hits": Counter(w["cause"] for f in fails for w in f["wrong_hits"])}


# ---------------------------------------------------------------- plots


def make_plots(doc: dict[str, Any], gold: GoldSet, catalog: Catalog, out: Path, primary_key: str | None) -> dict[str, str]:
    made: dict[str, str] = {}
    not_run = {m: "not run (no CLIP weights)" for m in SINGLE_RETRIEVERS if m not in doc.get("pair_scores", {})}
    if doc.get("pair_scores"):
        made["similarity"] = plots.similarity_histograms(
            doc["pair_scores"], out / "similarity_histograms.png", not_run=not_run,
            title=f"relevant vs non-relevant (query, judged image) pairs, {PRIMARY_FORM} queries").name
    bars = [(r["label"], [pq["metrics"]["ndcg@10"] for pq in doc["runs"][r["key"]]["per_query"]])
            for r in doc["tables"].get("modes", []) if r["status"] == "ok"]
    if bars:
        made["modes"] = plots.mode_bars(bars, out / "modes_ndcg.png", title=f"nDCG@10 per mode ({PRIMARY_FORM} queries)").name
    form_bars = [(r["label"], [pq["metrics"]["ndcg@10"] for pq in doc["runs"][r["key"]]["per_query"]])
                 for r in doc["tables"].get("forms", []) if r["status"] == "ok"]
    if form_bars:
        made["forms"] = plots.mode_bars(form_bars, out / "forms_ndcg.png", title="nDCG@10: short vs descriptive queries").name
    src_bars = [(r["label"], [pq["metrics"]["ndcg@10"] for pq in doc["runs"][r["key"]]["per_query"]])
                for r in doc["tables"].get("caption_sources", []) if r["status"] == "ok"]
    if src_bars:
        made["sources"] = plots.mode_bars(src_bars, out / "caption_sources_ndcg.png", title="nDCG@10 by caption source").name
    if primary_key:
        run = doc["runs"][primary_key]
        ranked = sorted(run["per_query"], key=lambda pq: pq["metrics"]["ndcg@10"])
        by_id = {q.id: q for q in gold.queries}
        chosen = [("best", pq) for pq in ranked[::-1][:3]] + [("worst", pq) for pq in ranked[:3]]
        strips = []
        for tag, pq in chosen:
            q = by_id[pq["id"]]
            items = []
            for t in pq["top"][:5]:
                f = t["file"]
                status = "unjudged" if not f or f not in gold.judged else ("relevant" if f in q.relevant else "wrong")
                items.append({"path": str(catalog.root / f) if f else "", "status": status, "label": Path(f or "?").stem[-12:]})
            strips.append({"title": f"{tag}: {pq['text'][:34]}\nnDCG@10 {pq['metrics']['ndcg@10']:.2f}", "items": items})
        made["thumbnails"] = plots.thumbnail_strips(strips, out / "best_worst_top5.png",
                                                    title=f"top-5 of {run['mode']} ({run['form']}): green relevant, red judged non-relevant, grey unjudged").name
    sweep = doc.get("sweep")
    if sweep:
        series: dict[str, list[tuple[float, float]]] = {}
        for row in sweep["table"]:
            w = row["weights"]
            name = f"clip={w['clip']:g}" if "clip" in w else "caption=1"
            for form_key in [k for k in row if k.startswith(sweep["metric"] + "_")]:
                series.setdefault(f"{name}, {form_key.split('_', 1)[1]}", []).append((w["bm25"], row[form_key]))
        base = {}
        for name in series:  # bm25 alone, per query form, in the same colour as that form's sweep line
            form = name.rsplit(", ", 1)[-1]
            key = _ok_key(doc, "forms", f"bm25 / {form}")
            if key:
                base[f"bm25 alone, {form}"] = doc["runs"][key]["summary"]["ndcg@10"]
        made["sweep"] = plots.weight_sweep(series, out / "weight_sweep.png", xlabel="bm25 weight (caption weight 1; 0 = caption alone)",
                                           baselines=base, title="hybrid RRF: nDCG@10 vs BM25 weight").name
    return made


# ---------------------------------------------------------------- markdown


def _same_weights(a: dict[str, float], b: dict[str, float]) -> bool:
    return all(abs(v - b.get(k, 1.0)) < 1e-9 for k, v in a.items())


def _weights_str(w: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in sorted(w.items()))


def render_markdown(doc: dict[str, Any], gold: GoldSet, catalog: Catalog, images: dict[str, str],
                    fails: list[dict[str, Any]], named: list[dict[str, Any]]) -> str:
    m = doc["meta"]
    L: list[str] = []
    add = L.append
    n_nocap = sum(1 for r in catalog.rows if r.get("categories_known") and r.get("source") == "coco2017" and not r.get("captions"))
    add("# Retrieval eval report\n")
    add(f"Generated {m['started']} in {m['elapsed_s'] / 60:.1f} min by `mmrag eval` (see the README for the command). "
        f"Catalog `{m['catalog']}`: {m['n_catalog']} images; gold file `{Path(m['gold']).name}` with {m['n_queries']} queries, "
        f"each in a short and a descriptive form.\n")
    add("**Relevance and the judged pool.** Relevance comes from COCO instance categories, never from caption text "
        f"({m['relevance_source']}). Metrics are computed over the **judged pool of {m['n_judged']} images**: every ranked list "
        "is condensed to judged images before scoring (unjudged images are skipped, not counted as wrong), and the column "
        "`unjudged@10` says how much of the raw top-10 was unjudged. "
        f"{n_nocap} judged images have categories but no captions, so their caption text is only the filename fallback.\n")
    add(f"Tables use the **{m['primary_form']}** query form unless they say otherwise; base index: text model "
        f"`{m['base_text_model']}`, CLIP `{m['base_clip_model'] or 'none'}`, catalog captions, RRF k={m['rrf_k']:g}, "
        f"fusion weights {_weights_str(m['fusion_weights'])}. nDCG@10 shows a 95% bootstrap interval over queries. Latency is the "
        "wall time of one `SearchEngine.search` call (query embedding + Milvus Lite + BM25 + fusion [+ rerank], k="
        f"{m['k_fetch']}), the median of 3 calls per query, with the configurations of one index interleaved query by query "
        "so background load hits them alike; this is a 2-core CPU machine shared with other jobs (1-min load average "
        "during the latency passes: " + ", ".join(f"{v[0]:.1f}–{v[1]:.1f}" for v in doc.get("load_average", {}).values()) +
        f"), so compare latencies within a table, not across runs. Model code ran with {m.get('threads', 'unchanged')} CPU "
        "thread(s) (`--threads`): with 2 OpenMP threads on these 2 shared cores, any background load makes OpenMP "
        "spin-wait and one query embedding goes from ~10 ms to ~450 ms (MiniLM) or ~1.2 s (e5).\n")
    add("CLIP status: " + "; ".join(f"`{k}`: {v}" for k, v in m["clip_status"].items()) + ".\n")

    add("## 1. Retrieval modes\n")
    extra = []
    sweep = doc.get("sweep")
    if sweep and sweep.get("best"):
        best_w = sweep["best"]["weights"]
        for row, keys_ in zip(sweep["table"], sweep["keys"]):
            key = next((k for k in keys_ if doc["runs"][k]["form"] == m["primary_form"]), None)
            if row["weights"] == best_w and key and not _same_weights(best_w, m["fusion_weights"]):
                extra.append((f"hybrid, swept weights {_weights_str(best_w)} (in-sample)", key, "ok"))
    add(results_table(doc, "modes", first_col="mode", extra_rows=extra) + "\n")
    if "modes" in images:
        add(f"![nDCG@10 per mode]({images['modes']})\n")
    keys = [(r["label"], r["key"]) for r in doc["tables"].get("modes", []) if r["status"] == "ok"]
    if len(keys) >= 2:
        add("Paired randomization test on per-query nDCG@10 (two-sided p):\n")
        for i in range(len(keys)):
            for j in range(i + 1, len(keys)):
                a, b = _per_query(doc, keys[i][1], "ndcg@10"), _per_query(doc, keys[j][1], "ndcg@10")
                ids = sorted(set(a) & set(b))
                diff = float(np.mean([a[x] - b[x] for x in ids]))
                add(f"- {keys[i][0]} − {keys[j][0]}: {diff:+.3f}, p = {paired_sign_flip_p([a[x] for x in ids], [b[x] for x in ids]):.3f}")
        add("")
        add("Per query tag (nDCG@10, " + m["primary_form"] + "):\n")
        add(tag_table(doc, gold, keys) + "\n")

    add("## 2. CLIP model A vs B\n")
    add(results_table(doc, "clip_models", first_col="CLIP model / mode") + "\n")
    add("## 3. Caption text model A vs B\n")
    add(results_table(doc, "text_models", first_col="text model / mode") + "\n")
    enc = doc.get("encoder_latency") or {}
    if enc:
        add("Query encoder alone (one `get_query_embedding` call, median of 3, all loaded encoders interleaved over the "
            "same query texts; CLIP rows are timed with whatever weights were loaded, random ones included):\n")
        add("| encoder | p50 ms | p95 ms | calls |\n|---|---|---|---|")
        for name, v in enc.items():
            add(f"| {name} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} | {int(v['n'])} |")
        add("")
    add("## 4. Short vs descriptive queries\n")
    add(results_table(doc, "forms", first_col="mode / form") + "\n")
    if "forms" in images:
        add(f"![short vs descriptive]({images['forms']})\n")
    add("## 5. Caption sources\n")
    add("`catalog` = the metadata sidecar's human captions; `ocr` = only text read from the image by rapidocr (plus the "
        "filename fallback); `vlm` = captions written by the configured VLM.\n")
    add(results_table(doc, "caption_sources", first_col="caption source / mode") + "\n")
    counts = {slug.rsplit("__", 1)[-1]: rep.get("caption_sources", {}) for slug, rep in doc.get("index_reports", {}).items()
              if slug.startswith(m["base_index"].rsplit("__", 1)[0] + "__")}
    if counts:
        add("Where each index's caption text came from (images per source; `filename` = nothing else was available): "
            + "; ".join(f"{src}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for src, c in sorted(counts.items())) + ".\n")
    if "sources" in images:
        add(f"![caption sources]({images['sources']})\n")
    if doc["tables"].get("ocr_channel"):
        add("### OCR text as its own channel\n")
        add("`catalog+ocr` indexes the sidecar captions as caption text and the text rapidocr reads inside each image "
            "in the separate `ocr` BM25 channel (it is kept out of the caption text). Weight 0 switches the channel off "
            "on the same index.\n")
        add(results_table(doc, "ocr_channel", first_col="index / configuration") + "\n")
        ocr_keys = [(r["label"].split(" / ", 1)[-1], r["key"]) for r in doc["tables"]["ocr_channel"] if r["status"] == "ok"]
        if ocr_keys:
            add("Per query tag (nDCG@10; `text-in-image` are the queries that ask for text inside the image):\n")
            add(tag_table(doc, gold, ocr_keys) + "\n")
    add("## 6. Reranking on/off\n")
    add("Rerank = re-score the fused top-20 by CLIP image–text cosine (and, with `--rerank-vlm`, a VLM yes/no judgement "
        "of the top 5).\n")
    add(results_table(doc, "rerank", first_col="configuration") + "\n")

    add("## 7. Fusion weight sweep\n")
    if sweep:
        add(_sweep_section(doc, sweep))
        if "sweep" in images:
            add(f"![weight sweep]({images['sweep']})\n")
    else:
        add("Not run.\n")

    add("## 8. Similarity distributions (modality gap)\n")
    if "similarity" in images:
        add(f"![similarity histograms]({images['similarity']})\n")
        for name, s in doc.get("pair_scores", {}).items():
            rel, non = np.asarray(s["relevant"]), np.asarray(s["nonrelevant"])
            if rel.size and non.size:
                auc = _auc(rel, non)
                add(f"- {name}: relevant mean {rel.mean():.3f}, non-relevant mean {non.mean():.3f}, "
                    f"ROC-AUC of the score as a relevance detector {auc:.3f} ({rel.size} / {non.size} pairs)")
        if "clip" not in doc.get("pair_scores", {}):
            add("- clip: not run (no CLIP weights). With real weights the CLIP panel shows the modality gap: text–image "
                "cosines sit far below text–text cosines (~0.2–0.35 vs ~0.3–0.8), so raw scores of the two sides are not "
                "comparable and only rank fusion (RRF) may combine them.")
        add("")
    if "thumbnails" in images:
        add("## 9. Best and worst queries\n")
        add(f"![best and worst top-5]({images['thumbnails']})\n")

    add("## 10. Failure analysis\n")
    counts = cause_counts(fails)
    add(f"Over all {len(fails)} queries of the primary hybrid run: misses (relevant images outside the judged top-10) by cause "
        + ", ".join(f"{c} {n}" for c, n in counts["misses"].most_common()) + "; wrong hits in the judged top-5 by cause "
        + ", ".join(f"{c} {n}" for c, n in counts["wrong_hits"].most_common()) + ". Per-query lists: `failures.md`.\n")
    for i, f in enumerate(named, 1):
        q = f["query"]
        ranks = _fmt_ranks(f["ranks"])
        where = f"judged rank {f['judged_rank']}" if f["kind"] == "wrong hit" else "not in the judged top-10"
        add(f"{i}. **{f['cause']}** — query `{q['id']}` (“{q['text']}”, nDCG@10 {q['ndcg@10']:.2f}): {f['kind']} "
            f"`{Path(f['file']).name}` ({where}; single-retriever ranks: {ranks}). Categories: {', '.join(f['categories']) or '—'}; "
            f"caption: “{f['caption'][:110]}”. **Caused by {f['blamed']}**: {f['why']}.")
    add("")
    section = render_query_tables(doc)  # negation, composite and multilingual queries (issue 11)
    if section:
        add(section)
    add("## No-match detection (held-out split)\n")
    add(no_match_markdown(doc.get("no_match") or {}))
    add("## 11. Not measured\n")
    for line in not_measured(doc):
        add(f"- {line}")
    add("")
    return "\n".join(L)


def _auc(rel: np.ndarray, non: np.ndarray) -> float:
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(rel, non, alternative="two-sided").statistic / (rel.size * non.size))


def _sweep_section(doc: dict[str, Any], sweep: dict[str, Any]) -> str:
    metric = sweep["metric"]
    forms = sorted({k.split("_", 1)[1] for row in sweep["table"] for k in row if k.startswith(metric + "_")})
    lines = [f"Hybrid RRF over {', '.join(sweep['retrievers'])} with per-retriever weights (RRF score = Σ w / (k + rank)). "
             f"{metric} averaged over both query forms, then per form. **The sweep uses the same gold queries it is scored on**, "
             "so the in-sample best is optimistic; the 2-fold check below picks weights on half the queries and scores the other half.\n",
             "| weights | " + metric + " (both forms) | " + " | ".join(forms) + " |", "|---|---|" + "---|" * len(forms)]
    for row in sweep["table"]:
        mark = " **best**" if row is sweep["best"] or row["weights"] == sweep["best"]["weights"] else ""
        lines.append(f"| {_weights_str(row['weights'])}{mark} | {row[metric]:.3f} | " +
                     " | ".join(f"{row.get(metric + '_' + f, float('nan')):.3f}" for f in forms) + " |")
    lines.append("")
    lines.append("2-fold cross-validation (queries split by sorted id, alternating):\n")
    lines.append("| fold | test queries | chosen on train | train " + metric + " | test " + metric + " | default weights on test |")
    lines.append("|---|---|---|---|---|---|")
    for cv in sweep["cv"]:
        lines.append(f"| {cv['fold']} | {cv['n_test']} | {_weights_str(cv['chosen'])} | {cv['train']:.3f} | {cv['test']:.3f} | "
                     f"{_fmt(cv['default_test'])} |")
    lines.append("")
    lines.append(recommendation(doc, sweep) + "\n")
    return "\n".join(lines)


def recommendation(doc: dict[str, Any], sweep: dict[str, Any]) -> str:
    metric = sweep["metric"]
    best, default = sweep["best"], sweep.get("default")
    full = {"clip": 1.0, "caption": 1.0, "bm25": 1.0, **best["weights"]}
    env = _weights_str(full)
    gains = [cv["test"] - cv["default_test"] for cv in sweep["cv"] if cv["default_test"] is not None]
    cv_text = ", ".join(f"{g:+.3f}" for g in gains)
    if default is not None and _same_weights(best["weights"], default["weights"]):
        text = (f"**Recommendation:** keep the default fusion weights `{env}` (env `MMRAG_FUSION_WEIGHTS=\"{env}\"`): they are "
                f"already the best point of the sweep in-sample ({metric} {best[metric]:.3f}). Held out, weights picked on one "
                f"half of the queries score {cv_text} against the default on the other half (fold 1, fold 2), so no "
                "other setting is supported by this gold set.")
    else:
        text = (f"**Recommendation:** default fusion weights `{env}` (env `MMRAG_FUSION_WEIGHTS=\"{env}\"`): in-sample {metric} "
                f"{best[metric]:.3f}" + (f" vs {default[metric]:.3f} for the current default" if default else "") + ". ")
        if gains:
            text += f"Held out, the weights chosen on one half score {cv_text} against the current default on the other half"
            text += " — the gain holds out of sample." if all(g > 0 for g in gains) else \
                " — the gain does not hold on every fold, so treat the change as weak evidence."
    if "clip" not in sweep["retrievers"]:
        text += " The CLIP weight was not swept (no CLIP weights); keep clip=1 until the sweep is re-run with real weights."
    return text


def not_measured(doc: dict[str, Any]) -> list[str]:
    out = []
    seen = set()
    for table, rows in doc["tables"].items():
        for r in rows:
            if r["status"] != "ok" and (table, r["status"]) not in seen:
                seen.add((table, r["status"]))
                labels = [x["label"] for x in rows if x["status"] == r["status"]]
                out.append(f"{table}: {', '.join(labels)} — {r['status']}")
    out.append("Open Images rows (69) and COCO rows without instance labels (80) are unjudged; no metric covers them.")
    out.append("Image-to-image (query by example) retrieval is not part of this gold set.")
    return out


# ---------------------------------------------------------------- entry


def primary_key(doc: dict[str, Any]) -> str | None:
    for label in ("hybrid", "caption", "bm25", "clip"):
        key = _ok_key(doc, "modes", label)
        if key:
            return key
    return None


def failures_markdown(fails: list[dict[str, Any]], catalog: Catalog) -> str:
    rows = {r["file"]: r for r in catalog.rows}
    L = ["# Per-query failures (primary hybrid run)\n",
         "Misses: relevant images outside the judged top-10. Wrong hits: judged non-relevant images in the judged top-5. "
         "Ranks are each single retriever's 1-based rank over the whole catalog ('>all' = not returned).\n"]
    for f in sorted(fails, key=lambda f: f["ndcg@10"]):
        L.append(f"## {f['id']} — “{f['text']}” (nDCG@10 {f['ndcg@10']:.2f}, {f['n_relevant']} relevant)\n")
        if f["wrong_hits"]:
            L.append("Wrong hits:")
            for w in f["wrong_hits"]:
                cap = best_caption(rows[w["file"]], f["text"])[:90]
                L.append(f"- #{w['judged_rank']} `{Path(w['file']).name}` [{_fmt_ranks(w['ranks'])}] {w['cause']} / {w['blamed']} — “{cap}”")
        if f["misses"]:
            L.append(f"Misses ({len(f['misses'])}):")
            for m in f["misses"][:12]:
                L.append(f"- `{Path(m['file']).name}` [{_fmt_ranks(m['ranks'])}] {m['cause']} / {m['blamed']}")
            if len(f["misses"]) > 12:
                L.append(f"- … {len(f['misses']) - 12} more (results.json)")
        if not f["wrong_hits"] and not f["misses"]:
            L.append("No failures.")
        L.append("")
    return "\n".join(L)


def slim(doc: dict[str, Any]) -> dict[str, Any]:
    """results.json: summaries and per-query metrics of every run; top-10 lists ([file, score, clip rank, caption
    rank, bm25 rank]) only for the modes table; no full rankings or pair scores (those stay in _work/)."""
    with_top = {r["key"] for r in doc["tables"].get("modes", []) if r["key"]}
    runs = {}
    for key, run in doc["runs"].items():
        per_query = []
        for pq in run.get("per_query", []):
            item = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in pq.items() if k in ("id", "latency_ms", "unjudged_top10")}
            if "metrics" in pq:
                item["metrics"] = {m: round(v, 4) for m, v in pq["metrics"].items()}
            if key in with_top:
                item["top"] = [[t["file"], round(t["score"], 4), t["ranks"].get("clip"), t["ranks"].get("caption"),
                                t["ranks"].get("bm25")] for t in pq.get("top", [])[:10]]
            per_query.append(item)
        runs[key] = {**run, "per_query": per_query}
    fails = [{**f, "misses": [{k: v for k, v in m.items() if k != "why"} for m in f["misses"]],
              "wrong_hits": [{k: v for k, v in w.items() if k != "why"} for w in f["wrong_hits"]]} for f in doc.get("failures", [])]
    no_match = {k: v for k, v in (doc.get("no_match") or {}).items() if k != "points"} or None
    out = {k: v for k, v in doc.items() if k not in ("rankings", "pair_scores", "runs", "failures")} | {
        "runs": runs, "failures": fails, "no_match": no_match}
    if "query_tables" in doc:
        out["query_tables"] = slim_query_tables(doc["query_tables"])
    return out


def write_report(doc: dict[str, Any], gold: GoldSet, catalog: Catalog, out: Path) -> dict[str, Path]:
    """Write report.md, failures.md, results.json and the PNGs into out; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    key = primary_key(doc)
    images = make_plots(doc, gold, catalog, out, key)
    fails = failures(doc, gold, catalog, key) if key else []
    named = named_failures(fails, catalog) if fails else []
    doc["failures"] = fails
    doc["named_failures"] = [{k: v for k, v in f.items() if k != "query"} | {"query": f["query"]["id"]} for f in named]
    paths = {"report": out / "report.md", "failures": out / "failures.md", "results": out / "results.json"}
    paths["report"].write_text(render_markdown(doc, gold, catalog, images, fails, named), encoding="utf-8")
    paths["failures"].write_text(failures_markdown(fails, catalog), encoding="utf-8")
    work = out / "_work"
    work.mkdir(exist_ok=True)
    (work / "full_results.json").write_text(json.dumps(doc), encoding="utf-8")
    paths["results"].write_text(json.dumps(slim(doc), separators=(",", ":")), encoding="utf-8")
    return {**paths, **{k: out / v for k, v in images.items()}}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from eval.gold import load_gold

    ap = argparse.ArgumentParser(description="re-render the retrieval report from OUT/_work/full_results.json")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "reports" / "retrieval")
    args = ap.parse_args(argv)
    doc = json.loads((args.out / "_work" / "full_results.json").read_text(encoding="utf-8"))
    catalog = Catalog.load(Path(doc["meta"]["catalog"]))
    gold = load_gold(Path(doc["meta"]["gold"]))
    gold = gold.subset([q["id"] for q in doc["failures"]]) if doc.get("failures") else gold
    print(write_report(doc, gold, catalog, args.out)["report"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
