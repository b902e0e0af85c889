"""Score inspection answers (VLM or pixel baseline) against gold labels.

Per image: TP/FP/FN/TN on "is defective", or abstain (answered "uncertain") or error (no usable answer:
never scored as a verdict). Rates (None when the denominator is 0):

  miss_rate         FN / (TP + FN)                 defective images answered "ok"
  false_alarm_rate  FP / (FP + TN)                 defect-free images answered "defective" (hallucination)
  accuracy          (TP + TN) / answered           on non-abstained, non-error answers
  catch_rate        TP / (defective images answered or abstained)
  abstention_rate   abstained / (answered + abstained)
  type_accuracy     TP images whose predicted types include a gold type / TP
  loc_hit_rate      TP images with a box/cell hitting a gold box / TP images that gave any box or cell
  grounded_detection_rate  TP images with a box/cell on a gold box / (TP + FN): "found, and in the right place"
  box_recall        gold boxes hit / gold boxes of answered defective images
  box_type_accuracy gold boxes hit by a box of the same type / gold boxes hit
  box_precision     predicted boxes on a gold box / predicted boxes of answered images
  confident_wrong   FP + FN answers with confidence >= 0.8

A box hits a gold box when IoU >= 0.1 or its centre lies inside it; a 3x3 grid cell hits when it overlaps it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

from rag.inspection.answer_parser import Answer
from rag.inspection.boxes import TINY_AREA_FRAC, hits
from rag.inspection.labels import ImageLabel

CONFIDENT = 0.8


@dataclass
class GoldBoxOutcome:
    label: str
    area_frac: float
    hit: bool
    type_ok: bool = False  # hit by a predicted box carrying the same defect type

    @property
    def size(self) -> str:
        return "tiny" if self.area_frac < TINY_AREA_FRAC else "larger"


@dataclass
class ImageOutcome:
    file: str
    source: str
    size_bucket: str
    gold_defective: bool
    gold_types: list[str]
    verdict: str  # defective | ok | uncertain | error
    status: str  # TP | FP | FN | TN | abstain | error
    confidence: float | None
    pred_types: list[str]
    n_pred_boxes: int
    n_pred_on_gold: int
    type_hit: bool | None
    localised: bool | None  # None: not a TP, or the answer gave no box/cell
    confident_wrong: bool
    gold_boxes: list[GoldBoxOutcome] = field(default_factory=list)
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.status in ("TP", "FP", "FN", "TN")

    @property
    def failed(self) -> bool:
        """Worth an overlay: wrong verdict, abstention, error, or a detection in the wrong place."""
        return self.status in ("FP", "FN", "abstain", "error") or self.localised is False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gold_boxes"] = [asdict(g) | {"size": g.size} for g in self.gold_boxes]
        return d


def score_image(label: ImageLabel, answer: Answer) -> ImageOutcome:
    gold = [GoldBoxOutcome(b.label, label.box_area_frac(b), False) for b in label.boxes]
    if answer.error is not None:
        status = "error"
    elif answer.defective is None:
        status = "abstain"
    elif answer.defective:
        status = "TP" if label.is_defective else "FP"
    else:
        status = "FN" if label.is_defective else "TN"
    n_on_gold = 0
    localised = type_hit = None
    if status in ("TP", "FP"):
        for g, b in zip(gold, label.boxes):
            on_it = [p for p in answer.boxes if hits(p, b.xyxy)]
            g.hit = bool(on_it)
            g.type_ok = any(p.label == b.label for p in on_it)
        n_on_gold = sum(any(hits(p, b.xyxy) for b in label.boxes) for p in answer.boxes)
    if status == "TP":
        type_hit = bool(set(answer.types) & set(label.defect_types))
        localised = any(g.hit for g in gold) if answer.boxes else None
    wrong = status in ("FP", "FN")
    return ImageOutcome(
        file=label.file,
        source=label.source,
        size_bucket=label.size_bucket,
        gold_defective=label.is_defective,
        gold_types=list(label.defect_types),
        verdict=answer.verdict,
        status=status,
        confidence=answer.confidence,
        pred_types=list(answer.types),
        n_pred_boxes=len(answer.boxes) if status in ("TP", "FP") else 0,
        n_pred_on_gold=n_on_gold,
        type_hit=type_hit,
        localised=localised,
        confident_wrong=wrong and answer.confidence is not None and answer.confidence >= CONFIDENT,
        gold_boxes=gold,
        error=answer.error,
    )


def score_all(labels: Mapping[str, ImageLabel], answers: Mapping[str, Answer]) -> list[ImageOutcome]:
    """Outcomes for every labelled image that has an answer (missing answers count as errors)."""
    out = []
    for file, label in labels.items():
        ans = answers.get(file) or Answer(None, error="no answer produced")
        out.append(score_image(label, ans))
    return out


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def summarize(outcomes: Iterable[ImageOutcome], box_filter: Callable[[GoldBoxOutcome], bool] | None = None) -> dict[str, Any]:
    """The metrics of the module docstring over a set of image outcomes."""
    outs = list(outcomes)
    c = {s: sum(o.status == s for o in outs) for s in ("TP", "FP", "FN", "TN", "abstain", "error")}
    answered = c["TP"] + c["FP"] + c["FN"] + c["TN"]
    tps = [o for o in outs if o.status == "TP"]
    with_loc = [o for o in tps if o.localised is not None]
    gold_boxes = [g for o in outs if o.answered and o.gold_defective for g in o.gold_boxes if box_filter is None or box_filter(g)]
    defective_seen = sum(o.gold_defective and o.status in ("TP", "FN", "abstain") for o in outs)
    pred_boxes = sum(o.n_pred_boxes for o in outs if o.answered)
    return {
        "n": len(outs),
        **{k.lower(): v for k, v in c.items()},
        "answered": answered,
        "miss_rate": _rate(c["FN"], c["TP"] + c["FN"]),
        "false_alarm_rate": _rate(c["FP"], c["FP"] + c["TN"]),
        "accuracy": _rate(c["TP"] + c["TN"], answered),
        "catch_rate": _rate(c["TP"], defective_seen),
        "abstention_rate": _rate(c["abstain"], answered + c["abstain"]),
        "error_rate": _rate(c["error"], len(outs)),
        "type_accuracy": _rate(sum(bool(o.type_hit) for o in tps), len(tps)),
        "loc_given": len(with_loc),
        "loc_hit_rate": _rate(sum(bool(o.localised) for o in with_loc), len(with_loc)),
        "grounded_detection_rate": _rate(sum(o.localised is True for o in tps), c["TP"] + c["FN"]),
        "gold_boxes": len(gold_boxes),
        "box_recall": _rate(sum(g.hit for g in gold_boxes), len(gold_boxes)),
        "box_type_accuracy": _rate(sum(g.type_ok for g in gold_boxes), sum(g.hit for g in gold_boxes)),
        "pred_boxes": pred_boxes,
        "box_precision": _rate(sum(o.n_pred_on_gold for o in outs if o.answered), pred_boxes),
        "confident_wrong": sum(o.confident_wrong for o in outs),
    }


def slices(outcomes: Iterable[ImageOutcome]) -> dict[str, Any]:
    """Summaries by source, by defect type (images containing it; box recall on boxes of that type) and by size."""
    outs = list(outcomes)
    by_source = {s: summarize(o for o in outs if o.source == s) for s in sorted({o.source for o in outs})}
    types = sorted({t for o in outs for t in o.gold_types})
    by_type = {t: summarize((o for o in outs if t in o.gold_types), box_filter=lambda g, t=t: g.label == t) for t in types}
    by_type["none (defect-free)"] = summarize(o for o in outs if not o.gold_defective)
    by_size = {
        bucket: summarize((o for o in outs if o.size_bucket == bucket), box_filter=None)
        for bucket in ("tiny", "larger", "none")
        if any(o.size_bucket == bucket for o in outs)
    }
    box_size = {
        size: summarize((o for o in outs if o.gold_defective), box_filter=lambda g, s=size: g.size == s)["box_recall"]
        for size in ("tiny", "larger")
    }
    return {"source": by_source, "defect_type": by_type, "size": by_size, "box_recall_by_box_size": box_size}


COMPARE_COLUMNS = (
    "n", "answered", "miss_rate", "false_alarm_rate", "accuracy", "catch_rate", "abstention_rate",
    "error_rate", "type_accuracy", "loc_hit_rate", "box_recall", "box_type_accuracy", "confident_wrong",
)  # fmt: skip


def compare(runs: Mapping[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Side-by-side rows; a run that was not executed (None) keeps its row with status 'not run'."""
    rows = []
    for name, summary in runs.items():
        if summary is None:
            rows.append({"run": name, "status": "not run"})
        else:
            rows.append({"run": name, "status": "measured", **{k: summary.get(k) for k in COMPARE_COLUMNS}})
    return rows
