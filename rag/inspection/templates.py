"""Finding the aligned defect-free template of a PCB scan when none is given on the command line.

Without a template the pixel baseline can only run its design-rule check, which finds far fewer defects,
so a scan is never silently downgraded when its template is at hand: the labels entry for the image
(matched by path, or by identical bytes for a copy elsewhere) or a DeepPCB-style sibling
(<id>_test.jpg beside <id>_template.jpg or <id>_temp.jpg).
"""

from __future__ import annotations

from pathlib import Path

from rag.errors import MmragError
from rag.hashing import file_sha256
from rag.images import IMAGE_EXTENSIONS

TEST_SUFFIX = "_test"
TEMPLATE_SUFFIXES = ("_template", "_temp")


def sibling_template(image: Path) -> Path | None:
    """<id>_template.<ext> (or _temp) next to <id>_test.<ext>, same extension first."""
    stem = image.stem
    if not stem.lower().endswith(TEST_SUFFIX):
        return None
    base = stem[: -len(TEST_SUFFIX)]
    extensions = [image.suffix] + sorted(e for e in IMAGE_EXTENSIONS if e != image.suffix.lower())
    for suffix in TEMPLATE_SUFFIXES:
        for ext in extensions:
            candidate = image.with_name(f"{base}{suffix}{ext}")
            if candidate.is_file():
                return candidate
    return None


def labelled_template(image: Path, labels_path: Path) -> Path | None:
    """The template the labels name for this image (same path, or a byte-identical copy)."""
    from rag.inspection.labels import load_labels, resolve_data_root

    try:
        labels = load_labels(labels_path)
        root = resolve_data_root(labels_path)
    except (MmragError, OSError, ValueError):
        return None
    with_template = [lab for lab in labels.values() if lab.template_file]
    target = image.resolve()
    for lab in with_template:
        if (root / lab.file).resolve() == target:
            return root / lab.template_file  # type: ignore[operator]
    try:
        digest = file_sha256(image)
    except OSError:
        return None
    for lab in with_template:
        labelled = root / lab.file
        if labelled.is_file() and labelled.stat().st_size == image.stat().st_size and file_sha256(labelled) == digest:
            return root / lab.template_file  # type: ignore[operator]
    return None


def find_template(image: Path, labels_path: Path | None = None) -> tuple[Path | None, str | None]:
    """(template, where it was found: 'labels' | 'beside the image') or (None, None)."""
    image = Path(image)
    if labels_path is not None and Path(labels_path).is_file():
        found = labelled_template(image, Path(labels_path))
        if found is not None and found.is_file():
            return found, "labels"
    found = sibling_template(image)
    return (found, "beside the image") if found is not None else (None, None)
