"""Fit the per-channel "no good match" thresholds (rag/match.py) and measure them on held-out queries.

Data: every gold query (the catalog holds what it asks for: "present") and every absent query
(eval/absent_queries.json, checked by word search), each in its short and descriptive form. Each query is run
through the engine as a user would run it (hybrid, k=10, and each calibrated channel alone); a query's evidence
per channel is the strongest normalised channel score among the results shown (rag.match.evidence).

Split: query ids (present and absent separately) are shuffled with a fixed seed and halved; both forms of a
query stay in the same half. Thresholds are fitted on the first half and reported on the second; the swapped
fold is reported too, to show how much the numbers move with the split.

Fit (per channel c a `none_below` t_c): a query is "none" when every channel's evidence is below its t_c. The
grid over midpoints between observed values (plus "this channel never rescues a query") maximises
    share of absent queries answered none - 2 x share of present queries answered none,
since telling a user that photos they have are not there costs more than a weak answer for a missing thing;
ties go to fewer present queries answered none. `good_above` is the highest evidence any absent query of the fit
half reached on that channel (at least t_c): above it, no absent query was ever seen. The joint thresholds are
fitted on hybrid runs (the channels rescue each other, so each can be strict); each channel also gets thresholds
fitted on its own runs ("alone"), used when it is the only calibrated channel of a query.

    python -m eval.match_calibration [--text-model all-MiniLM-L6-v2] [--write rag/match_thresholds.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from eval.absent import DEFAULT_ABSENT, AbsentQuery, load_absent
from eval.gold import GoldSet
from rag.match import CALIBRATED, LEVELS, ChannelThreshold, best, evidence

SEED = 11
FORMS = ("short", "descriptive")
K_SHOWN = 10  # the CLI's and the app's default k: evidence is what the user is shown
COST_FALSE_NONE = 2.0
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Point:
    id: str
    form: str
    text: str
    present: bool
    evidence: dict[str, float | None]  # channel -> strongest normalised score among the results shown


def split_ids(ids: Sequence[str], seed: int = SEED) -> tuple[list[str], list[str]]:
    """A fixed, seeded half of the ids (fit) and the rest (held out)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    half = (len(order) + 1) // 2
    return sorted(order[:half]), sorted(order[half:])


def query_evidence(response: Any, channels: Sequence[str], n_docs: int) -> dict[str, float | None]:
    """Per channel, the strongest normalised score among the results, normalised as the engine does when it judges
    a query: BM25 by the text the BM25 channel searched (negated words left out), not the raw query."""
    out: dict[str, float | None] = {}
    for ch in channels:
        values = [evidence(ch, (getattr(r, "scores", None) or {}).get(ch), bm25_text=response.bm25_query, n_docs=n_docs)
                  for r in response.results]
        values = [v for v in values if v is not None]
        out[ch] = max(values) if values else None
    return out


def collect(engine: Any, gold: GoldSet, absent: Sequence[AbsentQuery], mode: str, channels: Sequence[str], *,
            forms: Sequence[str] = FORMS, k: int = K_SHOWN, show_progress: bool = False) -> list[Point]:
    n_docs = engine.count()
    items = [(q.id, f, q.text(f), True) for q in gold.queries for f in forms]
    items += [(q.id, f, q.text(f), False) for q in absent for f in forms]
    points = []
    for qid, form, text, present in tqdm(items, desc=f"no-match {mode}", disable=not show_progress, leave=False):
        response = engine.search(text, mode=mode, k=k)
        points.append(Point(qid, form, text, present, query_evidence(response, channels, n_docs)))
    return points


def _matrix(points: Sequence[Point], channels: Sequence[str]) -> np.ndarray:
    return np.array([[p.evidence.get(ch) if p.evidence.get(ch) is not None else -np.inf for ch in channels]
                     for p in points], dtype=float).reshape(len(points), len(channels))


def _candidates(values: np.ndarray) -> list[float]:
    finite = np.unique(values[np.isfinite(values)])
    mids = ((finite[:-1] + finite[1:]) / 2).tolist() if finite.size > 1 else []
    return mids + [math.inf]  # inf: this channel never rescues a query from "none"


def fit(points: Sequence[Point], channels: Sequence[str], cost: float = COST_FALSE_NONE) -> dict[str, ChannelThreshold]:
    """Channel -> threshold; a channel whose best threshold is 'never rescues' is left out (it does not vote)."""
    x = _matrix(points, channels)
    present = np.array([p.present for p in points])
    if present.all() or not present.any():
        raise ValueError("the fit needs both present and absent queries")
    best_key, best_combo = None, None
    for combo in itertools.product(*[_candidates(x[:, i]) for i in range(len(channels))]):
        none = (x < np.array(combo)).all(axis=1)
        tpr, fpr = none[~present].mean(), none[present].mean()
        key = (round(tpr - cost * fpr, 12), -fpr, -sum(1 for t in combo if math.isinf(t)))
        if best_key is None or key > best_key:
            best_key, best_combo = key, combo
    out = {}
    for i, ch in enumerate(channels):
        t = best_combo[i]
        if math.isinf(t):
            continue
        absent_values = x[~present, i][np.isfinite(x[~present, i])]
        good = max(float(absent_values.max()) if absent_values.size else t, t)
        out[ch] = ChannelThreshold(float(t), good)
    return out


def verdict(point: Point, thresholds: dict[str, ChannelThreshold]) -> str | None:
    return best(th.level(point.evidence.get(ch)) for ch, th in thresholds.items() if ch in point.evidence)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def score(points: Sequence[Point], thresholds: dict[str, ChannelThreshold]) -> dict[str, Any]:
    """Counts of verdicts for absent and present queries, with 95% Wilson intervals of the two headline shares."""
    out: dict[str, Any] = {}
    for name, group in (("absent", [p for p in points if not p.present]), ("present", [p for p in points if p.present])):
        levels = [verdict(p, thresholds) for p in group]
        counts = {level: levels.count(level) for level in LEVELS}
        counts["n"] = len(group)
        counts["none_ci95"] = list(wilson(counts["none"], len(group)))
        counts["none_ids"] = sorted({f"{p.id}/{p.form}" for p, lv in zip(group, levels) if lv == "none"})
        out[name] = counts
    return out


def calibrate(engine: Any, gold: GoldSet, absent: Sequence[AbsentQuery], *, channels: Sequence[str] | None = None,
              seed: int = SEED, forms: Sequence[str] = FORMS, k: int = K_SHOWN, show_progress: bool = False) -> dict[str, Any]:
    """Fit on one seeded half, score on the other (and the swapped fold); returns the document the report and
    the thresholds file are written from."""
    available = list(getattr(engine, "channel_names", []))
    channels = [c for c in (channels or CALIBRATED) if c in available]
    if not channels:
        raise ValueError(f"no calibrated channel ({', '.join(CALIBRATED)}) among this engine's {available}")
    fit_gold, held_gold = split_ids([q.id for q in gold.queries], seed)
    fit_absent, held_absent = split_ids([q.id for q in absent], seed)
    halves = (set(fit_gold) | set(fit_absent), set(held_gold) | set(held_absent))
    modes = ["hybrid"] + [c for c in channels if len(channels) > 1]
    points = {mode: collect(engine, gold, absent, mode, channels if mode == "hybrid" else [mode], forms=forms, k=k,
                            show_progress=show_progress) for mode in modes}
    folds = []
    for fold, (fit_ids, test_ids) in enumerate((halves, halves[::-1]), start=1):
        joint = fit([p for p in points["hybrid"] if p.id in fit_ids], channels)
        # A channel searching alone (its own mode, or the only calibrated channel left) has its own threshold.
        alone = {}
        for ch in channels:
            alone.update(fit([p for p in points.get(ch, points["hybrid"]) if p.id in fit_ids], [ch]))
        rows = {}
        for mode in modes:
            used = joint if mode == "hybrid" else {mode: alone[mode]} if mode in alone else {}
            rows[mode] = {"fit": score([p for p in points[mode] if p.id in fit_ids], used),
                          "held_out": score([p for p in points[mode] if p.id in test_ids], used),
                          "channels": sorted(used)}
        folds.append({"fold": fold, "thresholds": {c: vars(t) for c, t in joint.items()},
                      "alone": {c: vars(t) for c, t in alone.items()}, "modes": rows,
                      "n_fit_ids": len(fit_ids), "n_test_ids": len(test_ids)})
    return {
        "seed": seed, "forms": list(forms), "k": k, "cost_false_none": COST_FALSE_NONE, "channels": channels,
        "n_present_queries": len(gold.queries), "n_absent_queries": len(absent),
        "split": {"fit": sorted(halves[0]), "held_out": sorted(halves[1])},
        "folds": folds,
        "points": [{"mode": m, "id": p.id, "form": p.form, "present": p.present,
                    "evidence": {c: (round(v, 5) if v is not None else None) for c, v in p.evidence.items()}}
                   for m, ps in points.items() for p in ps],
    }


def thresholds_document(doc: dict[str, Any], text_model: str, catalog: str, previous: dict[str, Any] | None = None,
                        clip_model: str | None = None) -> dict[str, Any]:
    """The committed rag/match_thresholds.json with fold 1's thresholds (other models' entries kept).

    Without CLIP: under text_models[text_model]. With CLIP: under clip_models[clip_model], for that text model (the
    joint fit covers clip, caption and bm25 together; the text-only entry is left as it was)."""
    out = previous or {}
    out["description"] = ("Per-channel 'no good match' thresholds read by rag/match.py through Settings.match_thresholds "
                          "(MMRAG_MATCH_THRESHOLDS). Written by `python -m eval.match_calibration --write`; never edit by "
                          "hand. caption: cosine; bm25: score / (query terms x ln(1 + (N - 0.5) / 1.5)); clip: cosine "
                          "(no thresholds until real CLIP weights are calibrated). 'channels' were fitted together (hybrid), "
                          "'alone' per channel on its own runs.")
    fold = doc["folds"][0]

    def pick(group: str, keep: Any) -> dict[str, Any]:
        return {c: {k: round(v, 5) for k, v in t.items()} for c, t in fold[group].items() if keep(c)}

    fit_info = {"catalog": catalog, "seed": doc["seed"], "forms": doc["forms"], "k": doc["k"],
                "cost_false_none": doc["cost_false_none"], "fit_ids": len(doc["split"]["fit"]),
                "with_clip": clip_model,
                "held_out": {m: {g: {"none": r["held_out"][g]["none"], "n": r["held_out"][g]["n"]}
                                 for g in ("absent", "present")} for m, r in fold["modes"].items()}}
    out.setdefault("text_models", {})
    out.setdefault("clip_models", {})
    if clip_model:
        out["clip_models"][clip_model] = {"text_model": text_model, "channels": pick("thresholds", lambda c: True),
                                          "alone": pick("alone", lambda c: c == "clip"), "fit": fit_info}
    else:
        out["text_models"][text_model] = {"channels": pick("thresholds", lambda c: True),
                                          "alone": pick("alone", lambda c: True), "fit": fit_info}
    return out


def compare_shipped(doc: dict[str, Any], path: Path, text_model: str) -> None:
    """Record on doc whether the thresholds file at path holds this fold-1 fit for text_model."""
    from rag.match import MatchJudge

    shipped = MatchJudge.load(path, text_model=text_model, clip_model=None)
    fitted = doc["folds"][0]["thresholds"]
    doc["shipped_same"] = set(shipped.thresholds) == set(fitted) and all(
        abs(getattr(shipped.thresholds[c], k) - v) < 1e-4 for c, t in fitted.items() for k, v in t.items())
    try:
        doc["shipped_file"] = str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        doc["shipped_file"] = str(path)


def main(argv: list[str] | None = None) -> int:
    from eval.cli import default_catalog, set_threads
    from eval.gold import catalog_files_of, load_gold
    from eval.retrieval_eval import Catalog, IndexSpec, default_engine_factory, work_settings
    from rag.config import DEFAULT_MATCH_THRESHOLDS, DEFAULT_TEXT_MODEL, Settings
    from rag.errors import MmragError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=None, help="sample catalog (default ../shared/data/retrieval)")
    parser.add_argument("--gold", type=Path, default=ROOT / "gold_queries.json")
    parser.add_argument("--absent", type=Path, default=DEFAULT_ABSENT)
    parser.add_argument("--text-model", default=DEFAULT_TEXT_MODEL)
    parser.add_argument("--clip-model", default=None,
                        help="real CLIP weights (hub id or folder) to calibrate the clip channel too; default: none")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--work", type=Path, default=ROOT / "eval/reports/retrieval/_work", help="work indexes")
    parser.add_argument("--write", type=Path, nargs="?", const=DEFAULT_MATCH_THRESHOLDS, default=None,
                        help=f"write fold 1's thresholds into this JSON (default {DEFAULT_MATCH_THRESHOLDS.name})")
    parser.add_argument("--out", type=Path, default=ROOT / "eval/reports/retrieval/no_match.json")
    args = parser.parse_args(argv)
    try:
        catalog_dir = (args.catalog or default_catalog()).resolve()
        catalog = Catalog.load(catalog_dir)
        gold = load_gold(args.gold, catalog_files=catalog_files_of(catalog_dir))
        absent = load_absent(args.absent)
        set_threads(1)
        spec = IndexSpec(args.text_model, args.clip_model, "catalog")
        engine, _ = default_engine_factory(spec, work_settings(Settings.from_env(), spec, args.work), catalog, True)
        with engine:
            doc = calibrate(engine, gold, absent, seed=args.seed, show_progress=True)
    except MmragError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    doc["text_model"] = args.text_model
    if args.write:
        previous = json.loads(args.write.read_text(encoding="utf-8")) if args.write.is_file() else None
        try:
            shown = str(catalog_dir.relative_to(ROOT.parent))
        except ValueError:
            shown = catalog_dir.name
        written = thresholds_document(doc, args.text_model, shown, previous, clip_model=args.clip_model)
        args.write.write_text(json.dumps(written, indent=1) + "\n", encoding="utf-8")
        print(f"thresholds: {args.write}")
    from eval.match_report import no_match_markdown

    compare_shipped(doc, args.write or DEFAULT_MATCH_THRESHOLDS, args.text_model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
    text = no_match_markdown(doc)
    args.out.with_suffix(".md").write_text(f"# No-match detection (held-out split), text model {args.text_model}\n\n"
                                           f"Written by `python -m eval.match_calibration`.\n\n{text}", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
