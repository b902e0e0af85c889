"""Query-understanding tables of the retrieval eval (issue 11), run on indexes the eval already opened:

- negation: the gold queries tagged "negation", without handling (the text sent literally), parsed with the
  negated words moved to a negative part but no BM25 exclusion, and with the full handling;
- composite: the queries tagged "composite", in composite syntax vs their single-string forms;
- multilingual: every gold query hand-translated (eval/multilingual_queries.json) per caption text model.

Metrics are those of the main tables (judged pool, condensed ranking) plus `negated@5`: the share of the judged
top-5 whose COCO categories include a category the query excludes. Nothing here is tuned to these queries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from eval.gold import GoldQuery, GoldSet, expr_categories
from eval.metrics import condense, mean_metrics, query_metrics
from rag.errors import MmragError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MULTILINGUAL = ROOT / "eval" / "multilingual_queries.json"
NEGATION_TAG, COMPOSITE_TAG = "negation", "composite"
MODES = ("caption", "bm25", "hybrid")
MULTILINGUAL_MODES = ("caption", "hybrid")
# name -> (literal, BM25 exclusion on)
NEGATION_VARIANTS = {
    "without handling (literal)": (True, True),
    "parsed, no BM25 exclusion": (False, False),
    "with handling": (False, True),
}
COMPOSITE_VARIANTS = (  # (label, text field, literal)
    ("composite syntax", "composite", False),
    ("descriptive, with handling", "descriptive", False),
    ("descriptive, literal", "descriptive", True),
    ("short, with handling", "short", False),
    ("short, literal", "short", True),
)


@dataclass(frozen=True)
class Translations:
    languages: dict[str, str]  # code -> name
    texts: dict[tuple[str, str, str], str]  # (query id, language, form) -> text
    path: Path | None = None

    def ids(self, language: str) -> set[str]:
        return {qid for qid, lang, _ in self.texts if lang == language}


def load_translations(path: Path, gold: GoldSet) -> Translations:
    """The hand translations; every id must be a gold query, every language give both forms."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MmragError(f"cannot read multilingual queries {path}: {exc}") from None
    languages = doc.get("languages")
    if not isinstance(languages, dict) or not languages or not isinstance(doc.get("queries"), list):
        raise MmragError(f"{path}: expected 'languages' {{code: name}} and a 'queries' list")
    known = {q.id for q in gold.queries}
    texts: dict[tuple[str, str, str], str] = {}
    for item in doc["queries"]:
        qid = item.get("id") if isinstance(item, dict) else None
        if qid not in known:
            continue  # a query outside this gold subset (e.g. --queries) is simply not measured
        for lang in languages:
            forms = item.get(lang) or {}
            for form in ("short", "descriptive"):
                text = forms.get(form) if isinstance(forms, dict) else None
                if not isinstance(text, str) or not text.strip():
                    raise MmragError(f"{path}: query {qid} lacks its {languages[lang]} {form} form")
                texts[(qid, lang, form)] = text.strip()
    return Translations(dict(languages), texts, Path(path))


class QueryRunner:
    """Runs one query text on one engine and scores it against a gold query."""

    def __init__(self, engine: Any, gold: GoldSet, catalog: Any, k: int) -> None:
        self.engine, self.gold, self.catalog, self.k = engine, gold, catalog, k
        self.categories = {r["file"]: set(r.get("categories", [])) for r in catalog.rows}

    def run(self, q: GoldQuery, text: str, mode: str, *, literal: bool = False, exclude: bool = True) -> dict[str, Any]:
        previous = getattr(self.engine, "exclude_negated_bm25", True)
        self.engine.exclude_negated_bm25 = exclude
        try:  # only what differs from a plain search is passed (duck-typed engines in tests)
            response = self.engine.search(text, mode=mode, k=self.k, **({"literal": True} if literal else {}))
        finally:
            self.engine.exclude_negated_bm25 = previous
        files = [self.catalog.file_of(r.path) for r in response.results]
        ranked = condense([f for f in files if f], self.gold.judged)
        _, negated = expr_categories(q.expr)
        top5 = ranked[:5]
        share = (sum(1 for f in top5 if self.categories.get(f, set()) & set(negated)) / len(top5)
                 if negated and top5 else None)
        return {"id": q.id, "text": text, "metrics": query_metrics(ranked, q.relevant), "negated@5": share,
                "top5": top5, "parts": [[p.text or p.image, p.weight] for p in getattr(response, "parts", [])],
                "negations": [n.text for n in getattr(response, "negations", [])]}


def summarize(per_query: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(per_query)}
    if per_query:
        out.update(mean_metrics(q["metrics"] for q in per_query))
        shares = [q["negated@5"] for q in per_query if q["negated@5"] is not None]
        out["negated@5"] = float(np.mean(shares)) if shares else None
        out["detected"] = sum(1 for q in per_query if q["negations"])
    return out


def _row(runs: list[dict[str, Any]], **labels: Any) -> dict[str, Any]:
    return {**labels, "summary": summarize(runs), "per_query": runs}


def negation_table(runner: QueryRunner, queries: Iterable[GoldQuery], forms: Sequence[str], modes: Sequence[str],
                   progress: bool = False) -> dict[str, Any]:
    queries = list(queries)
    rows = []
    for mode in tqdm(modes, desc="negation table", disable=not progress, leave=False):
        for variant, (literal, exclude) in NEGATION_VARIANTS.items():
            for form in forms:
                runs = [runner.run(q, q.text(form), mode, literal=literal, exclude=exclude) for q in queries]
                rows.append(_row(runs, mode=mode, variant=variant, form=form))
    return {"queries": [q.id for q in queries], "rows": rows}


def composite_table(runner: QueryRunner, queries: Iterable[GoldQuery], modes: Sequence[str],
                    progress: bool = False) -> dict[str, Any]:
    queries = [q for q in queries if q.composite]
    rows = []
    for mode in tqdm(modes, desc="composite table", disable=not progress, leave=False):
        for label, field, literal in COMPOSITE_VARIANTS:
            runs = [runner.run(q, q.composite if field == "composite" else q.text(field), mode, literal=literal)
                    for q in queries]
            rows.append(_row(runs, mode=mode, variant=label))
    return {"queries": [q.id for q in queries], "forms": {q.id: {"composite": q.composite, "short": q.short,
                                                                    "descriptive": q.descriptive} for q in queries},
            "rows": rows}


def multilingual_rows(runner: QueryRunner, text_model: str, translations: Translations, forms: Sequence[str],
                      modes: Sequence[str], progress: bool = False) -> list[dict[str, Any]]:
    """Rows for one caption text model: each mode x language x form, over the queries every language has."""
    common = set.intersection(*(translations.ids(lang) for lang in translations.languages))
    queries = [q for q in runner.gold.queries if q.id in common]
    rows = []
    for mode in modes:
        for lang in ["en", *translations.languages]:
            for form in forms:
                runs = []
                for q in tqdm(queries, desc=f"{text_model} {mode} {lang} {form}"[-50:], disable=not progress, leave=False):
                    text = q.text(form) if lang == "en" else translations.texts[(q.id, lang, form)]
                    runs.append(runner.run(q, text, mode))
                rows.append(_row(runs, text_model=text_model, mode=mode, language=lang, form=form))
    return rows


def run_query_tables(engine: Any, text_model: str, gold: GoldSet, catalog: Any, out: dict[str, Any], *, base: bool,
                     forms: Sequence[str], k: int, translations: Translations | None, progress: bool = False) -> None:
    """Fill `out` (the results document's "query_tables"): negation and composite tables on the base index,
    multilingual rows on every caption text model's index."""
    negation = [q for q in gold.queries if NEGATION_TAG in q.tags] if base else []
    composite = [q for q in gold.queries if COMPOSITE_TAG in q.tags and q.composite] if base else []
    if translations is not None and not translations.texts:
        translations = None  # no gold query of this set is translated
    if not (negation or composite or translations):
        return
    runner = QueryRunner(engine, gold, catalog, k)
    modes = [m for m in MODES if m in engine.available_modes]
    out.setdefault("channels", {})[text_model] = list(getattr(engine, "channel_names", modes))
    if base:
        if negation:
            out["negation"] = {"text_model": text_model, **negation_table(runner, negation, forms, modes, progress)}
        if composite:
            out["composite"] = {"text_model": text_model, **composite_table(runner, composite, modes, progress)}
    if translations is not None:
        ml = out.setdefault("multilingual", {"languages": {"en": "English", **translations.languages},
                                             "file": str(translations.path or ""), "rows": []})
        ml_modes = [m for m in MULTILINGUAL_MODES if m in modes] + (["bm25"] if base and "bm25" in modes else [])
        ml["rows"].extend(multilingual_rows(runner, text_model, translations, forms, ml_modes, progress))
