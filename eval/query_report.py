"""Markdown for the query-understanding tables (eval/query_tables.py): negation, composite, multilingual.

`render_query_tables(doc)` is one section of the retrieval report; `write_query_tables(doc, out)` writes it alone
(query_tables.md + query_tables.json) for `mmrag eval --query-tables only`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from eval.metrics import paired_sign_flip_p


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _f(x: Any, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def negation_section(t: dict[str, Any], channels: list[str]) -> list[str]:
    rows = t["rows"]
    forms = list(dict.fromkeys(r["form"] for r in rows))
    n = len(t["queries"])
    L = [f"### Negation queries with and without the handling\n",
         f"{n} gold queries tagged `negation` (relevance `X & !Y` from COCO categories), text model "
         f"`{t['text_model']}`, hybrid over {', '.join(channels)}. **negated@5** = share of the judged top-5 that "
         "holds the excluded category (lower is better). *Without handling* sends the text literally; *parsed, no "
         "BM25 exclusion* moves the negated words into a negative part (subtracted from the caption vector, left out "
         "of the BM25 text) but keeps every BM25 document; *with handling* also drops BM25 documents whose caption "
         "names the excluded thing (a person word stands for all person words).\n"]
    header = ["mode", "handling"] + [f"{m} {form}" for form in forms for m in ("P@5", "nDCG@10", "negated@5")]
    L += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for mode in dict.fromkeys(r["mode"] for r in rows):
        for variant in dict.fromkeys(r["variant"] for r in rows):
            cells = [mode, variant]
            for form in forms:
                s = (_find(rows, mode=mode, variant=variant, form=form) or {}).get("summary", {})
                cells += [_f(s.get("p@5")), _f(s.get("ndcg@10")), _f(s.get("negated@5"))]
            L.append("| " + " | ".join(cells) + " |")
    L.append("")
    detected = {form: (_find(rows, variant="with handling", form=form) or {}).get("summary", {}).get("detected")
                for form in forms}
    L.append("The parser found a negation in " + ", ".join(f"{d} of {n} {form}" for form, d in detected.items())
             + " forms.")
    lit = _find(rows, mode="hybrid", variant="without handling (literal)", form="descriptive")
    full = _find(rows, mode="hybrid", variant="with handling", form="descriptive")
    if lit and full:
        a, b = lit["summary"], full["summary"]
        p = paired_sign_flip_p([q["metrics"]["p@5"] for q in full["per_query"]], [q["metrics"]["p@5"] for q in lit["per_query"]])
        L.append(f"Hybrid, descriptive: P@5 {_f(a['p@5'])} → {_f(b['p@5'])} (paired randomization p {_p(p)}), "
                 f"negated@5 {_f(a['negated@5'])} → {_f(b['negated@5'])}.")
    L.append("")
    return L


def composite_section(t: dict[str, Any], channels: list[str]) -> list[str]:
    rows = t["rows"]
    L = ["### Composite queries vs their single-string form\n",
         f"{len(t['queries'])} gold queries tagged `composite`, each written in composite syntax and as plain "
         f"strings (text model `{t['text_model']}`, hybrid over {', '.join(channels)}). negated@5 averages the "
         "queries that exclude something.\n",
         "| query | composite | descriptive | short |", "|---|---|---|---|"]
    for qid, forms in t["forms"].items():
        L.append(f"| {qid} | `{forms['composite']}` | {forms['descriptive']} | {forms['short']} |")
    L += ["", "| mode | form | P@5 | nDCG@10 | MRR | negated@5 |", "|---|---|---|---|---|---|"]
    for r in rows:
        s = r["summary"]
        L.append(f"| {r['mode']} | {r['variant']} | {_f(s.get('p@5'))} | {_f(s.get('ndcg@10'))} | {_f(s.get('mrr'))} | "
                 f"{_f(s.get('negated@5'))} |")
    L.append("")
    return L


def _mean_non_en(rows: list[dict[str, Any]], model: str, mode: str, form: str, langs: list[str], metric: str) -> float:
    vals = [(_find(rows, text_model=model, mode=mode, language=lang, form=form) or {}).get("summary", {}).get(metric)
            for lang in langs]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else float("nan")


def _per_query(rows: list[dict[str, Any]], model: str, mode: str, form: str, langs: list[str], metric: str) -> list[float]:
    out = []
    for lang in langs:
        row = _find(rows, text_model=model, mode=mode, language=lang, form=form)
        out += [q["metrics"][metric] for q in (row or {}).get("per_query", [])]
    return out


def multilingual_section(t: dict[str, Any]) -> list[str]:
    rows = t["rows"]
    languages = t["languages"]
    others = [code for code in languages if code != "en"]
    models = list(dict.fromkeys(r["text_model"] for r in rows))
    forms = list(dict.fromkeys(r["form"] for r in rows))
    n = rows[0]["summary"]["n"] if rows else 0
    L = ["### Multilingual queries\n",
         f"The {n} gold queries hand-translated into {', '.join(languages[c] for c in others)} "
         f"(`{Path(t.get('file', '')).name}`); the catalog's captions are English, so a non-English query is a "
         "cross-lingual search. Each cell: P@5 / nDCG@10. BM25 matches caption words, so it only helps where a "
         "translation shares a word with the English captions (pizza, bus, zebra). The automatic negation is "
         "English-only.\n"]
    for form in forms:
        header = ["text model / mode", *(languages[c] for c in languages), "mean non-English"]
        L += [f"{form.capitalize()} queries:\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for model in models:
            for mode in dict.fromkeys(r["mode"] for r in rows if r["text_model"] == model):
                label = "bm25 (any text model)" if mode == "bm25" else f"{model} / {mode}"
                cells = [label]
                for code in languages:
                    s = (_find(rows, text_model=model, mode=mode, language=code, form=form) or {}).get("summary", {})
                    cells.append(f"{_f(s.get('p@5'), 2)} / {_f(s.get('ndcg@10'))}")
                cells.append(f"{_f(_mean_non_en(rows, model, mode, form, others, 'p@5'), 2)} / "
                             f"{_f(_mean_non_en(rows, model, mode, form, others, 'ndcg@10'))}")
                L.append("| " + " | ".join(cells) + " |")
        L.append("")
    fired = {code: (_find(rows, text_model=models[0], mode="caption", language=code, form="descriptive") or {})
             .get("summary", {}).get("detected", 0) for code in others}
    if any(fired.values()):
        L.append("The English negation parser fired on " + ", ".join(
            f"{v} {languages[c]} descriptive quer{'y' if v == 1 else 'ies'}" for c, v in fired.items() if v)
            + " (a word such as Spanish *no*); the parts it made are in the JSON.\n")
    L.append(recommendation(rows, models, others) + "\n")
    return L


def recommendation(rows: list[dict[str, Any]], models: list[str], others: list[str]) -> str:
    """Which caption text model to use, from hybrid nDCG@10 on descriptive queries (held to the numbers only)."""
    if len(models) < 2:
        return "Only one text model was measured: no recommendation."
    form, mode = "descriptive", "hybrid"
    score = {m: (_mean_non_en(rows, m, mode, form, others, "ndcg@10"), _mean_non_en(rows, m, mode, form, ["en"], "ndcg@10"))
             for m in models}
    best = max(models, key=lambda m: score[m][0])
    rest = [m for m in models if m != best]
    other = rest[0]
    p = paired_sign_flip_p(_per_query(rows, best, mode, form, others, "ndcg@10"),
                           _per_query(rows, other, mode, form, others, "ndcg@10"))
    en_diff = score[best][1] - score[other][1]
    text = (f"**Recommendation:** for queries that are not in English, use `{best}` (`--text-model {best}`, at index "
            f"time): hybrid nDCG@10 over {', '.join(others)} is {score[best][0]:.3f} vs {score[other][0]:.3f} for "
            f"`{other}` (paired randomization over query × language, p {_p(p)}). ")
    caption_only = _mean_non_en(rows, best, "caption", form, others, "ndcg@10")
    if caption_only > score[best][0]:
        text += (f"Its caption channel alone scores {caption_only:.3f} there: BM25 matches English caption words, so "
                 "fusing it costs non-English queries a little. ")
    if en_diff >= -0.01:
        text += (f"In English it scores {score[best][1]:.3f} vs {score[other][1]:.3f}, so it can be the default for every "
                 "catalog; its query latency is in the text-model table above.")
    else:
        text += (f"In English it scores {score[best][1]:.3f} vs {score[other][1]:.3f} ({en_diff:+.3f}): keep `{other}` "
                 "for English-only users and catalogs.")
    return text


def render_query_tables(doc: dict[str, Any]) -> str:
    """The report section (empty when the tables were not run)."""
    qt = doc.get("query_tables") or {}
    if not any(k in qt for k in ("negation", "composite", "multilingual")):
        return ""
    channels = qt.get("channels", {})
    L = ["## Query understanding: negation, composite and multilingual queries\n",
         "Caption side only where no CLIP weights exist (the hybrid rows fuse the channels named); CLIP rows: not run "
         "(no CLIP weights). Every query runs through `SearchEngine.search`, k = "
         f"{doc.get('meta', {}).get('k_fetch', 50)}, scored on the judged pool like the tables above.\n"]
    if "negation" in qt:
        L += negation_section(qt["negation"], channels.get(qt["negation"]["text_model"], []))
    if "composite" in qt:
        L += composite_section(qt["composite"], channels.get(qt["composite"]["text_model"], []))
    if "multilingual" in qt:
        L += multilingual_section(qt["multilingual"])
    return "\n".join(L)


def _round(x: Any) -> Any:
    return round(x, 4) if isinstance(x, float) else x


def slim_query_tables(qt: dict[str, Any]) -> dict[str, Any]:
    """What results.json keeps: summaries, per-query metrics; top-5 files and parts only for the small tables."""
    out: dict[str, Any] = {}
    for name, table in qt.items():
        if not isinstance(table, dict) or "rows" not in table:
            out[name] = table
            continue
        small = name != "multilingual"  # the multilingual table has thousands of (query, language) runs
        keep = ("id", "negated@5", "negations", "text", "top5", "parts") if small else ("id",)
        metrics = None if small else ("p@5", "ndcg@10")
        rows = [{**{k: v for k, v in r.items() if k != "per_query"},
                 "per_query": [{**{k: _round(q[k]) for k in keep if k in q},
                                **({} if small or not q.get("negations") else {"negations": q["negations"]}),
                                "metrics": {m: _round(v) for m, v in q["metrics"].items() if metrics is None or m in metrics}}
                               for q in r["per_query"]]}
                for r in table["rows"]]
        out[name] = {**table, "rows": rows}
    return out


def write_query_tables(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """query_tables.md and query_tables.json (slimmed: see slim_query_tables) in out."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"report": out / "query_tables.md", "results": out / "query_tables.json"}
    meta = doc.get("meta", {})
    head = (f"# Query understanding tables\n\nGenerated {meta.get('started', '')} in {meta.get('elapsed_s', 0) / 60:.1f} min "
            f"by `mmrag eval --query-tables only`; catalog `{meta.get('catalog', '')}` ({meta.get('n_catalog', '?')} "
            f"images, {meta.get('n_judged', '?')} judged), gold `{Path(meta.get('gold', '')).name}`.\n\n")
    paths["report"].write_text(head + render_query_tables(doc), encoding="utf-8")
    paths["results"].write_text(json.dumps({"meta": meta, "query_tables": slim_query_tables(doc.get("query_tables", {}))},
                                           separators=(",", ":"), ensure_ascii=False), encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> int:
    """Re-render OUT/query_tables.md from OUT/query_tables.json."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "reports" / "retrieval")
    args = ap.parse_args(argv)
    doc = json.loads((args.out / "query_tables.json").read_text(encoding="utf-8"))
    print(write_query_tables(doc, args.out)["report"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
