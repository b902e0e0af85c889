"""How well a query matched the catalog: "good" | "weak" | "none", per result and per query.

A fused RRF score is 1/(k + rank) summed over channels: it says where a result ranked, not how close it is, so
the same value means a strong match for one query and a stranger for another. The verdict therefore reads each
channel's own score, which is comparable across queries once normalised:
- caption: the cosine between the query and the caption vectors (unchanged);
- bm25: the score divided by (number of query terms x the largest IDF a term can have in this catalog),
  ln(1 + (N - 0.5) / 1.5). The raw score grows with the number of query terms and with log N; the quotient is
  about the mean share of "rare-word evidence" per query term (0 = no term found, ~1 = every term is a word
  that occurs once in the catalog, found in a caption of typical length);
- clip: the image-text cosine, once thresholds for real CLIP weights exist (none are fitted yet; they go under
  `clip_models[<clip model>]` with the text model they were fitted with).

Per channel a threshold file gives `none_below` and `good_above`, fitted on the gold queries plus queries for
things the catalog does not hold (`python -m eval.match_calibration`): one set fitted with the channels together
(hybrid) and one per channel alone (its own mode, or the only calibrated channel of a query). A result is "good" when any calibrated
channel is above its good_above, "none" when every calibrated channel of the query is below its none_below (a
channel that did not return the result counts as below), else "weak". The query's verdict is its best result's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from rag.bm25 import tokenize
from rag.errors import MmragError

LEVELS = ("none", "weak", "good")
CALIBRATED = ("caption", "bm25", "clip")  # channels whose scores have a normalisation here


@dataclass(frozen=True)
class ChannelThreshold:
    none_below: float
    good_above: float

    def level(self, evidence: float | None) -> str:
        if evidence is None or evidence < self.none_below:
            return "none"
        return "good" if evidence > self.good_above else "weak"


def bm25_idf_max(n_docs: int) -> float:
    """Lucene IDF of a term found in one document of n_docs: the most one query term can weigh."""
    return math.log(1.0 + (max(n_docs, 1) - 0.5) / 1.5)


def bm25_evidence(score: float | None, query_text: str, n_docs: int) -> float | None:
    """A BM25 score normalised per query (see the module doc); None when the query has no BM25 terms."""
    if score is None:
        return None
    terms = set(tokenize(query_text or ""))
    if not terms:
        return None
    return float(score) / (len(terms) * bm25_idf_max(n_docs))


def evidence(channel: str, score: float | None, *, bm25_text: str = "", n_docs: int = 0) -> float | None:
    """The number a channel's threshold is compared with."""
    if score is None:
        return None
    if channel == "bm25":
        return bm25_evidence(score, bm25_text, n_docs)
    return float(score)


def best(levels: Iterable[str | None]) -> str | None:
    known = [level for level in levels if level is not None]
    return max(known, key=LEVELS.index) if known else None


class MatchJudge:
    """Thresholds for the models one engine runs with; channels without thresholds do not vote."""

    def __init__(self, thresholds: Mapping[str, ChannelThreshold], source: str = "", *,
                 alone: Mapping[str, ChannelThreshold] | None = None) -> None:
        self.thresholds = dict(thresholds)  # fitted together: used when exactly these channels vote
        self.alone = dict(alone or {})  # fitted per channel on its own runs: any other set of voters
        self.source = source

    @classmethod
    def load(cls, path: Path | str, *, text_model: str, clip_model: str | None, required: bool = False) -> "MatchJudge":
        """The thresholds of this text model (caption, bm25) and CLIP model (clip) from the fitted JSON file.

        required: the path was chosen by the user (MMRAG_MATCH_THRESHOLDS), so a missing file is an error.
        """
        path = Path(path)
        if not path.is_file():
            if required:
                raise MmragError(f"match thresholds file not found: {path} (MMRAG_MATCH_THRESHOLDS)")
            return cls({}, f"{path} (missing)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            entry = doc.get("text_models", {}).get(text_model) or {}
            clip = doc.get("clip_models", {}).get(clip_model or "") or {}
            if clip.get("text_model") != text_model:  # a CLIP fit holds only for the text model it was made with
                clip = {}
            joint = _read(clip.get("channels")) or _read(entry.get("channels"))  # CLIP loaded: the 3-channel fit
            alone = {**_read(entry.get("alone")), **_read(clip.get("alone"))}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MmragError(f"bad match thresholds file {path}: {type(exc).__name__}: {exc}") from None
        return cls(joint, str(path), alone=alone)

    @property
    def channels(self) -> list[str]:
        return sorted(set(self.thresholds) | set(self.alone))

    def for_voters(self, searched: Iterable[str]) -> dict[str, ChannelThreshold]:
        """The thresholds for the calibrated channels among those that searched (and recorded their own scores):
        the jointly fitted ones when exactly those channels vote, else each channel's own."""
        names = [name for name in searched if name in self.thresholds or name in self.alone]
        if self.thresholds and set(names) == set(self.thresholds):
            return dict(self.thresholds)
        return {name: self.alone[name] for name in names if name in self.alone}

    def result_level(self, scores: Mapping[str, float | None], thresholds: Mapping[str, ChannelThreshold], *,
                     bm25_text: str = "", n_docs: int = 0) -> str | None:
        return best(th.level(evidence(ch, scores.get(ch), bm25_text=bm25_text, n_docs=n_docs))
                    for ch, th in thresholds.items())

    def query_evidence(self, results: Iterable[Any], voters: Iterable[str], *, bm25_text: str = "",
                       n_docs: int = 0) -> dict[str, float | None]:
        """Per voting channel, the strongest evidence among the results shown (None: no result from it)."""
        voters = list(voters)
        out: dict[str, float | None] = {ch: None for ch in voters}
        for result in results:
            for ch in voters:
                value = evidence(ch, (result.scores or {}).get(ch), bm25_text=bm25_text, n_docs=n_docs)
                if value is not None and (out[ch] is None or value > out[ch]):
                    out[ch] = value
        return out


def _read(values: Mapping[str, Any] | None) -> dict[str, ChannelThreshold]:
    return {name: ChannelThreshold(float(v["none_below"]), float(v["good_above"]))
            for name, v in (values or {}).items() if name in CALIBRATED}
