"""Matplotlib figures of the retrieval eval (Agg backend, modest PNGs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

DPI = 90
STATUS_COLOURS = {"relevant": "#2ca02c", "wrong": "#d62728", "unjudged": "#9e9e9e"}
_AXIS_LABEL = {"clip": "cosine (CLIP text vs image)", "caption": "cosine (query vs caption vector)", "bm25": "BM25 score"}


def _save(fig: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return out


def similarity_histograms(
    scores: dict[str, dict[str, Sequence[float]]], out: Path, *, not_run: dict[str, str] | None = None, title: str = ""
) -> Path:
    """One panel per retriever: score distribution of relevant vs non-relevant (query, image) pairs.

    scores[retriever] = {"relevant": [...], "nonrelevant": [...]}; not_run[retriever] = reason text.
    """
    names = list(scores) + [n for n in (not_run or {}) if n not in scores]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.2 * max(1, len(names)), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names):
        if name not in scores:
            ax.text(0.5, 0.5, f"{name}\n{(not_run or {})[name]}", ha="center", va="center", transform=ax.transAxes, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        rel = np.asarray(scores[name].get("relevant", []), dtype=float)
        non = np.asarray(scores[name].get("nonrelevant", []), dtype=float)
        note = {}
        if name == "bm25":  # most pairs share no term (score 0): say how many, plot the rest
            note = {"rel": f", {np.mean(rel == 0):.0%} zero" if rel.size else "", "non": f", {np.mean(non == 0):.0%} zero" if non.size else ""}
            rel, non = rel[rel > 0], non[non > 0]
        both = np.concatenate([rel, non]) if rel.size + non.size else np.zeros(1)
        bins = np.linspace(both.min(), both.max() if both.max() > both.min() else both.min() + 1, 40)
        if non.size:
            ax.hist(non, bins=bins, density=True, alpha=0.55, color="#9e9e9e", label=f"non-relevant (n={non.size}{note.get('non', '')}, mean {non.mean():.2f})")
        if rel.size:
            ax.hist(rel, bins=bins, density=True, alpha=0.6, color="#2ca02c", label=f"relevant (n={rel.size}{note.get('rel', '')}, mean {rel.mean():.2f})")
        ax.set_title(name)
        ax.set_xlabel(_AXIS_LABEL.get(name, "score") + (" (pairs with score > 0)" if name == "bm25" else ""))
        ax.set_ylabel("density")
        ax.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def mode_bars(
    rows: Sequence[tuple[str, Sequence[float]]], out: Path, *, metric: str = "nDCG@10", title: str = "", seed: int = 0
) -> Path:
    """Bar = mean over queries, dots = the individual queries (jittered), one bar per row label."""
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * max(1, len(rows)), 3.6))
    for i, (label, values) in enumerate(rows):
        vals = np.asarray(values, dtype=float)
        mean = float(vals.mean()) if vals.size else 0.0
        ax.bar(i, mean, color="#4c72b0", alpha=0.55, width=0.7)
        ax.scatter(i + rng.uniform(-0.25, 0.25, vals.size), vals, s=9, color="#1f1f1f", alpha=0.6, zorder=3)
        ax.text(i, 1.02, f"{mean:.3f}", ha="center", va="bottom", fontsize=8, fontweight="bold")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([label for label, _ in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(metric + " (dots: queries)")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def _thumb(path: str | Path, size: int = 112) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            canvas = Image.new("RGB", (size, size), (255, 255, 255))
            canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
            return np.asarray(canvas)
    except OSError:
        return np.full((size, size, 3), 230, dtype=np.uint8)


def thumbnail_strips(strips: Sequence[dict[str, Any]], out: Path, *, k: int = 5, title: str = "") -> Path:
    """One row per query: its top-k thumbnails framed green (relevant), red (judged wrong), grey (unjudged).

    strips = [{"title": str, "items": [{"path": str, "status": "relevant"|"wrong"|"unjudged", "label": str}]}]
    """
    n = max(1, len(strips))
    fig, axes = plt.subplots(n, k, figsize=(1.5 * k, 1.7 * n), squeeze=False)
    for row, strip in zip(axes, strips):
        items = list(strip.get("items", []))[:k]
        for col, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(items):
                ax.axis("off")
                continue
            item = items[col]
            ax.imshow(_thumb(item["path"]))
            colour = STATUS_COLOURS.get(item.get("status", "unjudged"), "#9e9e9e")
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(4)
            ax.set_xlabel(item.get("label", ""), fontsize=6)
        row[0].set_ylabel(strip.get("title", ""), fontsize=7, rotation=0, ha="right", va="center", labelpad=6)
    fig.suptitle(title or "top-5 (green relevant, red judged non-relevant, grey unjudged)", fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def weight_sweep(points: dict[str, Sequence[tuple[float, float]]], out: Path, *, xlabel: str, metric: str = "nDCG@10",
                 baselines: dict[str, float] | None = None, title: str = "") -> Path:
    """Lines of metric vs a weight (grid values evenly spaced), one per series; dashed baselines."""
    fig, ax = plt.subplots(figsize=(5.8, 3.4))
    grid = sorted({x for pts in points.values() for x, _ in pts})
    pos = {x: i for i, x in enumerate(grid)}
    for i, (name, pts) in enumerate(points.items()):
        pts = sorted(pts)
        ax.plot([pos[x] for x, _ in pts], [y for _, y in pts], marker="o", color=f"C{i}", label=name)
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, linestyle="--", linewidth=1, color=f"C{i % max(1, len(points))}", alpha=0.7, label=name)
    ax.set_xticks(range(len(grid)))
    ax.set_xticklabels([f"{x:g}" for x in grid])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)
