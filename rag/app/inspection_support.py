"""The app's inspection tab without Streamlit: pick a labelled image, ask the VLM (or the pixel baseline), score, draw."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from rag.config import Settings, env_value
from rag.errors import MmragError, VLMUnavailableError
from rag.hashing import bytes_sha256, file_sha256
from rag.images import BadImageError, load_image

if TYPE_CHECKING:
    from rag.inspection.scoring import ImageOutcome
    from rag.inspection.answer_parser import Answer
    from rag.inspection.labels import ImageLabel
    from rag.vlm_client import VLMClient

OVERLAY_MIN_SIDE = 384  # small tiles are enlarged (nearest neighbour) so a 2-px box is visible


def labels_path() -> Path:
    from rag.inspection.labels import DEFAULT_LABELS

    return Path(env_value("MMRAG_INSPECTION_LABELS") or DEFAULT_LABELS)


@dataclass
class InspectionSet:
    """The labelled inspection images: file (relative to root) -> gold label."""

    root: Path
    labels: dict[str, "ImageLabel"]
    _by_hash: dict[str, str] | None = field(default=None, repr=False)

    def path(self, file: str) -> Path:
        return self.root / file

    def template(self, label: "ImageLabel") -> Path | None:
        """The aligned defect-free template of a PCB scan, when the label names one that exists."""
        if not label.template_file:
            return None
        path = self.root / label.template_file
        return path if path.is_file() else None

    def available(self) -> list[str]:
        """Labelled files present on disk, sorted."""
        return sorted(f for f in self.labels if self.path(f).is_file())

    def match_bytes(self, data: bytes) -> str | None:
        """The labelled file with exactly these bytes (an uploaded copy of a set image keeps its gold label)."""
        if self._by_hash is None:
            self._by_hash = {file_sha256(self.path(f)): f for f in self.available()}
        return self._by_hash.get(bytes_sha256(data))


def load_inspection_set(path: Path | None = None) -> InspectionSet:
    """Labels from inspection_labels.json and the folder holding their images; MmragError when absent."""
    from rag.inspection.labels import load_labels, resolve_data_root

    path = path or labels_path()
    labels = load_labels(path)
    root = resolve_data_root(path)
    if not root.is_dir():
        raise MmragError(f"inspection images not found at {root} (set MMRAG_SHARED_DATA)")
    return InspectionSet(root=root, labels=labels)


@dataclass
class InspectionResult:
    """What the tab shows for one image: whose answer, the answer, its score against gold, and the overlay."""

    source: str  # "vlm" | "baseline"
    answer: "Answer"
    overlay: Image.Image
    label: "ImageLabel | None" = None
    outcome: "ImageOutcome | None" = None
    vlm_note: str | None = None  # why the VLM was not used (not configured, endpoint down)
    model: str | None = None

    @property
    def who(self) -> str:
        if self.source == "vlm":
            return f"VLM {self.model}"
        return f"pixel baseline ({self.answer.extra.get('method', '?')})"


def vlm_client(settings: Settings) -> tuple["VLMClient | None", str | None]:
    """(client, None) when MMRAG_VLM_* is configured, else (None, the one-line reason)."""
    from rag.vlm_client import VLMClient

    try:
        return VLMClient.from_settings(settings), None
    except VLMUnavailableError as exc:
        return None, str(exc)


def overlay_image(image_path: Path, label: "ImageLabel | None", answer: "Answer") -> Image.Image:
    """Gold boxes green, predicted red (grid cells dashed orange), enlarged when tiny."""
    from rag.inspection.overlay import draw_boxes

    drawn = draw_boxes(load_image(image_path), gold=label.boxes if label else (), predicted=answer.boxes)
    if max(drawn.size) < OVERLAY_MIN_SIDE:
        scale = OVERLAY_MIN_SIDE / max(drawn.size)
        drawn = drawn.resize((round(drawn.width * scale), round(drawn.height * scale)), Image.Resampling.NEAREST)
    return drawn


def inspect(
    settings: Settings,
    image_path: Path,
    *,
    prompt: str,
    crops: str,
    label: "ImageLabel | None" = None,
    template: Path | None = None,
    use_cache: bool = True,
) -> InspectionResult:
    """Ask the configured VLM (prompt variant x crop spec); without a usable VLM, run the pixel baseline instead."""
    from rag.inspection.scoring import score_image
    from rag.inspection.runner import InspectConfig, baseline_answer, inspect_image

    config = InspectConfig(prompt=prompt, crops=crops)  # validates both (MmragError)
    try:
        load_image(image_path)
    except BadImageError as exc:
        raise MmragError(f"cannot inspect {Path(image_path).name}: {exc}") from None
    client, note = vlm_client(settings)
    answer, source = None, "baseline"
    if client is not None:
        cache = _open_cache(settings) if use_cache else None
        try:
            answer, source = inspect_image(client, Path(image_path), config, cache), "vlm"
        except VLMUnavailableError as exc:  # the endpoint as a whole is down: say so, fall back
            note = str(exc)
        finally:
            if cache is not None:
                cache.close()
    if answer is None:
        answer = baseline_answer(Path(image_path), template)
    return InspectionResult(
        source=source,
        answer=answer,
        overlay=overlay_image(Path(image_path), label, answer),
        label=label,
        outcome=score_image(label, answer) if label is not None else None,
        vlm_note=note,
        model=client.model if client is not None else None,
    )


def _open_cache(settings: Settings) -> Any:
    """The same reply cache `mmrag inspect` uses; opened per call (sqlite handles stay in one thread)."""
    from rag.inspection.cache import VLMCache

    try:
        return VLMCache(settings.data_dir / "vlm_cache.sqlite")
    except MmragError:
        return None


STATUS_WORDS = {
    "TP": "correct: defect found",
    "TN": "correct: no defect",
    "FP": "wrong: false alarm (gold says defect-free)",
    "FN": "wrong: missed defect",
    "abstain": "abstained (answered uncertain)",
    "error": "no usable answer",
}


def gold_text(label: "ImageLabel") -> str:
    """One line about the gold label."""
    if not label.is_defective:
        return "defect-free"
    counts: dict[str, int] = {}
    for box in label.boxes:
        counts[box.label] = counts.get(box.label, 0) + 1
    parts = [f"{n} {name}" for name, n in counts.items()] or list(label.defect_types)
    return "defective: " + ", ".join(parts)


def answer_text(answer: "Answer") -> str:
    """One line about an answer: verdict, types, confidence, box count."""
    if answer.error:
        return f"error: {answer.error}"
    pieces = [answer.verdict]
    if answer.types:
        pieces.append(", ".join(answer.types))
    if answer.confidence is not None:
        pieces.append(f"confidence {answer.confidence:.2f}")
    if answer.boxes:
        pieces.append(f"{len(answer.boxes)} box{'es' if len(answer.boxes) != 1 else ''}")
    return " · ".join(pieces)
