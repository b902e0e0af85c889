"""Choose the pixel baseline's thresholds on the TUNE split only, and check them against the module constants.

    .venv/bin/python scripts/tune_pixel_baseline.py

PCB + template: grid over tolerance band, opening size and minimum blob area; pick the best box-level F1
(gold box hit / predicted box on a gold box, same hit rule as the scoring). PCB without template: half the
smallest legitimate island/hole on the tune templates. Tiles: 1.25 x the largest dark blob on the tune
defect-free tiles. Test-split images are never read here.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.inspection import pixel_baseline as pb  # noqa: E402
from rag.inspection.boxes import hits  # noqa: E402
from rag.inspection.labels import DEFAULT_LABELS, baseline_split, inspection_data_dir, load_labels, tune_set_digest  # noqa: E402


def main() -> int:
    labels = load_labels(DEFAULT_LABELS)
    split = baseline_split(labels.values())
    digest = tune_set_digest(split)
    print(f"tune set sha256 {digest} (module TUNE_SET_SHA256 {'matches' if digest == pb.TUNE_SET_SHA256 else 'differs: update it'})")
    root = inspection_data_dir()
    tune = [lab for f, lab in sorted(labels.items()) if split[f] == "tune"]
    pairs = [(pb._read_gray(root / lab.file), pb._read_gray(root / lab.template_file), lab) for lab in tune if lab.template_file]

    best = None
    print("PCB with template (tune split):  tol open min_area  recall  precision  F1")
    for tol, open_px, min_area in itertools.product((1, 2), (0, 2, 3), (6, 12, 20, 30)):
        gold = hit = npred = good = 0
        for test, tmpl, lab in pairs:
            preds = pb.detect_pcb_with_template(test, tmpl, tol, open_px, min_area).boxes
            gold += len(lab.boxes)
            hit += sum(any(hits(p, g.xyxy) for p in preds) for g in lab.boxes)
            npred += len(preds)
            good += sum(any(hits(p, g.xyxy) for g in lab.boxes) for p in preds)
        r, p = hit / max(1, gold), good / max(1, npred)
        f1 = 2 * r * p / (r + p) if r + p else 0.0
        print(f"  {tol} {open_px} {min_area:3d}   {r:.3f}  {p:.3f}  {f1:.3f}")
        if best is None or f1 > best[0]:
            best = (f1, tol, open_px, min_area)
    assert best is not None
    print(f"chosen: PCB_TOL={best[1]} PCB_OPEN={best[2]} PCB_MIN_AREA={best[3]} (F1 {best[0]:.3f});"
          f" module has {pb.PCB_TOL} {pb.PCB_OPEN} {pb.PCB_MIN_AREA}")

    legit = []
    for lab in tune:
        if lab.source == "deeppcb" and not lab.is_defective:
            cu = pb._copper(pb._read_gray(root / lab.file))
            h, w = cu.shape
            for mask in (cu, 1 - cu):
                n, _, st, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
                legit += [int(a) for x, y, bw, bh, a in st[1:] if x > 0 and y > 0 and x + bw < w and y + bh < h and a >= pb.PCB_DRC_MIN_AREA]
    print(f"PCB without template: smallest legitimate island/hole on tune templates = {min(legit)} px -> "
          f"PCB_DRC_MAX_AREA={min(legit) // 2}; module has {pb.PCB_DRC_MAX_AREA}")

    free_max = 0
    for lab in tune:
        if lab.source == "magnetic_tile" and not lab.is_defective:
            blobs = pb.dark_blobs(pb._read_gray(root / lab.file))
            free_max = max([free_max] + [a for _, a in blobs])
    print(f"tiles: largest dark blob on tune defect-free tiles = {free_max} px -> TILE_MIN_AREA={int(round(1.25 * free_max, -1))};"
          f" module has {pb.TILE_MIN_AREA}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
