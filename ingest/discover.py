"""Finding catalog files: every supported image under a folder, in a stable order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rag.images import is_image_path


@dataclass(frozen=True)
class Discovered:
    images: list[Path]
    skipped: list[tuple[Path, str]]  # files that are not of an image type, with the reason


def discover(root: Path) -> Discovered:
    """Walk root (a folder or one file). Hidden files and folders are ignored silently."""
    if root.is_file():
        return Discovered([root], []) if is_image_path(root) else Discovered([], [(root, "not an image file type")])
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if is_image_path(path):
            images.append(path)
        else:
            skipped.append((path, f"not an image file type ({path.suffix or 'no extension'})"))
    return Discovered(images, skipped)
