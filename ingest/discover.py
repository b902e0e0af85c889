"""Finding catalog files: every supported image under a folder, in a stable order.

Every path that is not indexed gets a reason in `skipped` (the index summary's bad files), except hidden
files and folders, which are ignored on purpose. Symlinks to files are followed; symlinks to folders are
not (a link back up the tree would loop), and are listed so nothing disappears silently.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from rag.images import file_kind, is_image_path


@dataclass(frozen=True)
class Discovered:
    images: list[Path]
    skipped: list[tuple[Path, str]]  # paths not indexed, with the reason


def _symlink_problem(path: Path) -> str | None:
    """Why a symlink cannot be indexed (None: it points at a regular file)."""
    try:
        info = os.stat(path)  # follows the link
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if exc.errno == errno.ENOENT:
            return f"dangling symlink (target {os.readlink(path)} missing)"
        return f"symlink target unreadable: {exc.strerror or exc}"
    if stat.S_ISDIR(info.st_mode):
        return "symlink to a folder (not followed)"
    if not stat.S_ISREG(info.st_mode):
        return f"symlink to {file_kind(info.st_mode)}, not a file"
    return None


def classify(path: Path) -> str | None:
    """Why path is skipped; None for an image file to index (and for a plain folder, which is walked)."""
    if path.is_symlink():
        problem = _symlink_problem(path)
        if problem:
            return problem
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if stat.S_ISDIR(info.st_mode):
        return "a folder named like an image (its contents are indexed)" if is_image_path(path) else None
    if not stat.S_ISREG(info.st_mode):
        return f"not a regular file ({file_kind(info.st_mode)})"
    if not is_image_path(path):
        return f"not an image file type ({path.suffix or 'no extension'})"
    if info.st_size == 0:
        return "empty file"
    return None


def discover(root: Path) -> Discovered:
    """Walk root (a folder or one file). Hidden files and folders are ignored silently."""
    root = Path(root)
    if not root.is_dir():
        why = classify(root)
        return Discovered([root], []) if why is None else Discovered([], [(root, why)])
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        why = classify(path)
        if why is None:
            if not path.is_dir():
                images.append(path)
        else:
            skipped.append((path, why))
    return Discovered(images, skipped)
