"""Regenerate inspection_labels.json (repo root) from ../shared/data/inspection/ground_truth.jsonl.

    .venv/bin/python scripts/build_inspection_labels.py [--ground-truth PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.errors import MmragError  # noqa: E402
from rag.inspection.labels import DEFAULT_LABELS, build_labels, inspection_data_dir, write_labels  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ground-truth", type=Path, default=inspection_data_dir() / "ground_truth.jsonl")
    ap.add_argument("--out", type=Path, default=DEFAULT_LABELS)
    args = ap.parse_args(argv)
    try:
        labels = build_labels(args.ground_truth)
    except MmragError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # relative to the labels file, which is how every reader resolves it (rag.inspection.labels.resolve_data_root)
    data_root = os.path.relpath(args.ground_truth.resolve().parent, args.out.resolve().parent)
    write_labels(labels, args.out, data_root)
    counts = Counter((lab.source, lab.is_defective, lab.size_bucket) for lab in labels)
    print(f"wrote {len(labels)} labels to {args.out}")
    for key, n in sorted(counts.items()):
        print(f"  {key}: {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
