"""Build examples/catalog (the small sample catalog shipped in the repo) from the full shared sample set.

    .venv/bin/python scripts/build_example_catalog.py [--source DIR] [--out DIR] [--count N]

Only COCO photos whose own Flickr license allows redistribution with attribution are used (CC BY 2.0,
CC BY-SA 2.0, "No known copyright restrictions"; never NC or ND), and only those with captions and
categories. Picks are greedy over categories so the demo's example searches have answers. Deterministic:
same source and Pillow version give byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.config import REPO_ROOT, shared_data_dir  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "examples" / "catalog"
# COCO's per-image license name -> the short name used in ATTRIBUTION.md
LICENSES = {
    "Attribution License": "CC BY 2.0",
    "Attribution-ShareAlike License": "CC BY-SA 2.0",
    "No known copyright restrictions": "No known copyright restrictions (Flickr Commons)",
}
# Categories the demo and the tests search for: each gets ANCHOR_TARGET images whose captions name it
# (searches match caption text, never categories) before anything else counts.
ANCHORS = ("cat", "laptop", "bus", "pizza", "dog", "elephant", "stop sign")
ANCHOR_TARGET = 3
MAX_SIDE = 320
QUALITY = 85
_PHOTO_ID = re.compile(r"/(\d+)_[0-9a-f]+(?:_[a-z])?\.jpg$")


def candidates(rows: list[dict]) -> list[dict]:
    """Redistributable COCO rows with captions and known categories, sorted by file."""
    keep = [r for r in rows if r.get("source") == "coco2017" and r.get("license") in LICENSES
            and r.get("captions") and r.get("categories") and r.get("categories_known")]  # fmt: skip
    return sorted(keep, key=lambda r: r["file"])


def names(row: dict, category: str) -> bool:
    """Whether the row's captions name the category (plural too)."""
    text = " ".join(row["captions"]).lower()
    return re.search(rf"\b{re.escape(category)}(s|es)?\b", text) is not None


def select(rows: list[dict], count: int) -> list[dict]:
    """Greedy coverage: anchors up to ANCHOR_TARGET, then every category once, twice, ... ties by file name."""
    pool = candidates(rows)
    have: dict[str, int] = {}  # picked images per category
    named: dict[str, int] = {}  # picked images per anchor whose captions name it

    def score(row: dict) -> tuple[int, ...]:
        cats = row["categories"]
        anchor = sum(c in ANCHORS and named.get(c, 0) < ANCHOR_TARGET and names(row, c) for c in cats)
        return (anchor, *(sum(have.get(c, 0) < t for c in cats) for t in range(1, 6)))

    chosen: list[dict] = []
    while pool and len(chosen) < count:
        best = max(pool, key=score)  # max keeps the first of equals: pool is sorted by file
        pool.remove(best)
        chosen.append(best)
        for c in best["categories"]:
            have[c] = have.get(c, 0) + 1
            if c in ANCHORS and names(best, c):
                named[c] = named.get(c, 0) + 1
    return sorted(chosen, key=lambda r: r["file"])


def flickr_page(flickr_url: str) -> str | None:
    """The Flickr photo page (which names the author) from a static image URL; None if it does not parse."""
    match = _PHOTO_ID.search(flickr_url or "")
    return f"https://www.flickr.com/photo.gne?id={match.group(1)}" if match else None


def target_size(size: tuple[int, int]) -> tuple[int, int]:
    w, h = size
    scale = MAX_SIDE / max(w, h)
    return (w, h) if scale >= 1 else (max(1, round(w * scale)), max(1, round(h * scale)))


def encode(src: Path, dest: Path) -> tuple[int, int]:
    """Downscale to MAX_SIDE (LANCZOS) and save as a plain JPEG: no EXIF, no ICC profile, no comments."""
    with Image.open(src) as img:
        rgb = img.convert("RGB")
        size = target_size(rgb.size)
        if size != rgb.size:
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    rgb.save(dest, "JPEG", quality=QUALITY, optimize=True)
    return size


def catalog_row(row: dict, size: tuple[int, int]) -> dict:
    """The shared sidecar row, its size updated, plus the Flickr photo page for attribution."""
    out = dict(row)
    out["size"] = list(size)
    page = flickr_page(row.get("flickr_url", ""))
    if page:
        out["flickr_page"] = page
    return out


def attribution(rows: list[dict], source_rows: list[dict]) -> str:
    left_out = Counter(r["license"] for r in source_rows if r.get("source") == "coco2017" and r["license"] not in LICENSES)
    counts = Counter(LICENSES[r["license"]] for r in rows)
    repos = ", ".join(sorted({r["from_repo"] for r in rows if r.get("from_repo")}))
    lines = [
        "# Example catalog: attribution and licenses",
        "",
        f"{len(rows)} photos from COCO 2017 (https://cocodataset.org), drawn by `scripts/build_example_catalog.py`",
        "from the project's full sample set (`shared/data/retrieval`, documented in `shared/data/SOURCES.md`,",
        f"which took them from the GitHub COCO subsets {repos}).",
        "",
        "- **Photos:** every COCO image is a Flickr photo under its own license, recorded per",
        "  image in COCO's annotations (fields `license`, `license_url` in `metadata.jsonl`). Only photos that",
        "  may be redistributed with attribution are here: "
        + ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) + ".",
        "  No NonCommercial or NoDerivatives photos: the full set's "
        + ", ".join(f"{n} {name!r}" for name, n in sorted(left_out.items())) + " stay out of the repository.",
        "- **Authors:** COCO does not record photographers' names; each photo's Flickr page (linked below, by",
        "  the photo id in its COCO `flickr_url`) names its author.",
        f"- **Changes:** every photo was downscaled to a long side of at most {MAX_SIDE} px (LANCZOS) and",
        f"  re-encoded as JPEG (quality {QUALITY}) without EXIF. The CC BY-SA photos stay under CC BY-SA 2.0.",
        "- **Captions and categories** in `metadata.jsonl` are COCO annotations, CC BY 4.0 (COCO terms of use).",
        "",
        "One line per image: file, Flickr photo page, original image URL, license.",
        "",
    ]
    for row in rows:
        name = LICENSES[row["license"]]
        page = row.get("flickr_page") or "(photo page unknown)"
        lines.append(f"- `{row['file']}`: {page} (image {row['flickr_url']}), [{name}]({row['license_url']})")
    return "\n".join(lines) + "\n"


def build(source: Path, out: Path, count: int) -> list[dict]:
    rows = [json.loads(line) for line in (source / "metadata.jsonl").read_text().splitlines() if line.strip()]
    chosen = select(rows, count)
    images = out / "images"
    keep = {Path(r["file"]).name for r in chosen}
    for stale in images.glob("*.jpg") if images.is_dir() else []:
        if stale.name not in keep:
            stale.unlink()
    written = []
    for row in chosen:
        name = Path(row["file"]).name
        size = encode(source / row["file"], images / name)
        written.append(catalog_row({**row, "file": f"images/{name}"}, size))
    (out / "metadata.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in written))
    (out / "ATTRIBUTION.md").write_text(attribution(written, rows))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=shared_data_dir() / "retrieval")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--count", type=int, default=40)
    args = ap.parse_args(argv)
    if not (args.source / "metadata.jsonl").is_file():
        print(f"error: full sample set not found at {args.source} (set MMRAG_SHARED_DATA or pass --source)",
              file=sys.stderr)  # fmt: skip
        return 2
    written = build(args.source, args.out, args.count)
    total = sum((args.out / r["file"]).stat().st_size for r in written)
    cats = sorted({c for r in written for c in r["categories"]})
    print(f"wrote {len(written)} images ({total / 1e6:.2f} MB, {len(cats)} categories) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
