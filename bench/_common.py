"""Shared bench helpers: repo paths, the random-weight CLIP folder, timing, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

from rag.config import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"


def shared_data() -> Path:
    return shared_data_dir()


def random_clip_dir() -> Path:
    """The real ViT-B/32 architecture with random weights (built once, cached; see rag/dev/random_clip.py)."""
    from rag.dev.random_clip import build_random_clip

    return build_random_clip(REPO / ".cache" / "random-clip-vit-b32")  # the folder tests/conftest.py uses


def timed(fn: Callable[[], object], repeats: int = 3, warmup: int = 1, best: bool = True) -> float:
    """Wall seconds of fn() after warmup calls: the best of `repeats` (default) or their median.

    The dev box is shared: other engineers' jobs only ever add time, so the best of several runs is the
    estimate of what this code costs on an idle machine (throughputs); latency percentiles use every sample.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return min(samples) if best else statistics.median(samples)


def load_average() -> str:
    try:
        return "load average %.1f / %.1f / %.1f (1/5/15 min)" % os.getloadavg()
    except OSError:
        return "load average unknown"


def percentile(samples_ms: list[float], q: float) -> float:
    ordered = sorted(samples_ms)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = [name for name in ("avx512f", "avx512_bf16", "amx_bf16", "amx_int8") if f" {name}" in flags]
    return (
        f"{cpu}, {os.cpu_count()} cores ({', '.join(isa) or 'no AVX-512'}), "
        f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    def fmt(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
