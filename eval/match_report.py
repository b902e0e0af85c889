"""The "no good match" table of the retrieval report, from the eval.match_calibration document."""

from __future__ import annotations

from typing import Any


def _share(counts: dict[str, Any]) -> str:
    n, k = counts["n"], counts["none"]
    if not n:
        return "—"
    lo, hi = counts["none_ci95"]
    return f"{k}/{n} ({100 * k / n:.0f}%, 95% CI {100 * lo:.0f}–{100 * hi:.0f}%)"


def _levels(counts: dict[str, Any]) -> str:
    return f"{counts['none']} / {counts['weak']} / {counts['good']}"


def _thresholds(fold: dict[str, Any]) -> str:
    parts = [f"{c} none below {t['none_below']:.3f}, good above {t['good_above']:.3f}" for c, t in fold["thresholds"].items()]
    return "; ".join(parts) or "no channel votes"


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["n"] > 0 and b["n"] > 0 and a["none_ci95"][0] <= b["none_ci95"][1] and b["none_ci95"][0] <= a["none_ci95"][1]


def _comparisons(modes: dict[str, Any]) -> list[str]:
    """Fold 1: each single channel against hybrid, on both shares, said to be within noise or not."""
    out = []
    hybrid = modes.get("hybrid", {}).get("held_out")
    for mode, row in modes.items():
        if mode == "hybrid" or not hybrid or not row["channels"]:
            continue
        for group, what in (("absent", "absent→none"), ("present", "present→none")):
            a, b = hybrid[group], row["held_out"][group]
            verdict = "within noise" if _overlap(a, b) else "outside noise"
            out.append(f"Fold 1 {what}, hybrid {a['none']}/{a['n']} vs {mode} alone {b['none']}/{b['n']}: {verdict}.")
    return out


def no_match_markdown(doc: dict[str, Any]) -> str:
    """Held-out table (both folds, every mode), the fitted thresholds and a noise note."""
    if not doc or not doc.get("folds"):
        return "Not run.\n"
    n_forms = len(doc["forms"])
    L = [
        f"A query is answered **none** (\"no good match\") when every calibrated channel's own score is below its "
        f"threshold, **good** when one is above the highest score an absent query reached in the fit half, else "
        f"**weak** (rag/match.py). The fused RRF score is never thresholded. Data: {doc['n_present_queries']} gold "
        f"queries (present) and {doc['n_absent_queries']} queries for things the catalog does not hold (absent, "
        f"`eval/absent_queries.json`, checked by `scripts/check_absent_queries.py`), each in {n_forms} forms, k={doc['k']}. "
        f"Query ids are split in halves with seed {doc['seed']}; thresholds are fitted on one half (maximising absent→none "
        f"minus {doc['cost_false_none']:g}× present→none) and counted on the other. Fold 1's thresholds are the shipped "
        "ones (`rag/match_thresholds.json`); fold 2 swaps the halves to show how much the split moves the numbers.\n",
        "| fold | mode | voting channels | absent answered none (held out) | present answered none, wrongly (held out) "
        "| absent none / weak / good | present none / weak / good |",
        "|---|---|---|---|---|---|---|",
    ]
    for fold in doc["folds"]:
        for mode, row in fold["modes"].items():
            held = row["held_out"]
            channels = ", ".join(row["channels"]) or "none (not calibrated)"
            L.append(f"| {fold['fold']} | {mode} | {channels} | {_share(held['absent'])} | {_share(held['present'])} | "
                     f"{_levels(held['absent'])} | {_levels(held['present'])} |")
    L.append("")
    for fold in doc["folds"]:
        alone = _thresholds({"thresholds": fold.get("alone", {})})
        L.append(f"- Fold {fold['fold']} thresholds: together (hybrid) {_thresholds(fold)}; alone {alone}.")
    first = doc["folds"][0]["modes"]["hybrid"]["held_out"]
    wrong = ", ".join(first["present"]["none_ids"]) or "none"
    missed = [p for p in first["absent"]["none_ids"]]
    L.append(f"- Fold 1, hybrid: present queries wrongly answered none: {wrong}; absent queries answered none: "
             f"{len(missed)} of {first['absent']['n']}.")
    if "shipped_same" in doc:
        L.append(f"- The shipped thresholds file (`{doc['shipped_file']}`) " + (
            "holds exactly this fold-1 fit." if doc["shipped_same"] else
            "differs from this fit: rerun `python -m eval.match_calibration --write` and commit it."))
    L.append("- Caveat: the absent queries were admitted by a word search over the same captions BM25 indexes, so BM25 "
             "finding none of their words is partly by construction; a present thing asked for in words no caption "
             "uses (the gold synonym queries) is where BM25 alone would fail and the caption cosine has to carry it.")
    L.append("- CLIP: not run (no real CLIP weights here); rag/match.py reads `clip_models` thresholds once they are "
             "fitted with real weights.")
    L.append(f"- Noise: the two forms of one query are not independent, so the intervals are if anything too narrow; "
             f"with {first['absent']['n']} absent and {first['present']['n']} present held-out queries, differences "
             "whose intervals overlap are within noise. " + " ".join(_comparisons(doc["folds"][0]["modes"])))
    L.append("")
    return "\n".join(L)
