"""Opening catalog images safely: supported types, size and shape limits, EXIF orientation, first frame, RGB.

Extreme strips (a 164-byte 1x20000 PNG) are refused, not letterboxed: CLIP preprocessing scales the shortest
side to 224, so a 1:20000 strip becomes 224 x 4.5 M px and takes every byte of memory. A strip that thin is
not a photo anyone searches for, and refusing it keeps one rule for the catalog, `search --image` and app
uploads. Pillow warnings raised while decoding (corrupt EXIF) are captured and returned, never printed.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from rag.errors import MmragError
from rag.hashing import bytes_sha256

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 80_000_000
MAX_ASPECT_RATIO = 25.0  # long side / short side; wide panoramas are ~4-10
MODEL_SIDE = 224  # the short side CLIP-style preprocessing scales to
MAX_RESIZED_PIXELS = 4_000_000  # what one image may become before the centre crop (~48 MB as float32 RGB)


class BadImageError(MmragError, ValueError):
    """The file is not a usable image; the message says why (for the index summary)."""


@dataclass
class LoadedImage:
    """An image decoded from exactly the bytes that were hashed (sha256 is its catalog id)."""

    sha256: str
    image: Image.Image
    warnings: list[str] = field(default_factory=list)  # decoder warnings (corrupt EXIF ...), one line each


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def check_shape(width: int, height: int, *, max_pixels: int = MAX_PIXELS, short_side: int = MODEL_SIDE,
                max_resized_pixels: int = MAX_RESIZED_PIXELS) -> None:
    """Refuse images too large, too thin, or that would become too large once the short side is scaled to short_side."""
    if width < 1 or height < 1:
        raise BadImageError(f"image has no pixels ({width}x{height} px)")
    if width * height > max_pixels:
        raise BadImageError(f"image too large ({width}x{height} px > {max_pixels / 1e6:.0f} Mpx)")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise BadImageError(f"extreme aspect ratio ({width}x{height} px is {ratio:,.0f}:1, limit {MAX_ASPECT_RATIO:g}:1)")
    resized = short_side * short_side * ratio
    if resized > max_resized_pixels:
        raise BadImageError(f"{width}x{height} px would become {resized / 1e6:.1f} Mpx when its short side is scaled "
                            f"to {short_side} px (limit {max_resized_pixels / 1e6:.1f} Mpx)")


def _check_file(path: Path, max_bytes: int) -> int:
    """The file's size; BadImageError for missing, non-regular (FIFO, device, folder), empty or oversized files."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise BadImageError(f"cannot read: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):  # opening a FIFO would block forever
        raise BadImageError(f"not a regular file ({file_kind(info.st_mode)})")
    if info.st_size == 0:
        raise BadImageError("empty file")
    if info.st_size > max_bytes:
        raise BadImageError(f"file too large ({info.st_size / 2**20:.1f} MiB > {max_bytes / 2**20:.0f} MiB)")
    return info.st_size


def file_kind(mode: int) -> str:
    """'a FIFO', 'a folder' ... for a stat mode that is not a regular file."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _warning_line(w: warnings.WarningMessage) -> str:
    return f"{w.category.__name__}: {' '.join(str(w.message).split())}"


def decode_image(source: bytes | Path | io.IOBase, *, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, list[str]]:
    """Decode to RGB (EXIF orientation, first frame) after the shape check; return (image, decoder warnings)."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle) as img:
                check_shape(*img.size, max_pixels=max_pixels)
                img.seek(0)
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = img.convert("RGB")
    except BadImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(f"not a readable image ({type(exc).__name__})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImageError(f"corrupt image: {' '.join(str(exc).split())}") from exc
    lines = list(dict.fromkeys(_warning_line(w) for w in caught))
    return rgb, lines


def read_image(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Read the file once, hash those bytes and decode the same bytes: the id always matches what was decoded."""
    path = Path(path)
    _check_file(path, max_bytes)
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)  # the file may have grown since stat
    except OSError as exc:
        raise BadImageError(f"cannot read: {exc.strerror or exc}") from exc
    if not data:
        raise BadImageError("empty file")
    if len(data) > max_bytes:
        raise BadImageError(f"file too large (> {max_bytes / 2**20:.0f} MiB)")
    image, lines = decode_image(data, max_pixels=max_pixels)
    return LoadedImage(bytes_sha256(data), image, lines)


def load_image(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Return the image as an RGB PIL image with EXIF orientation applied (first frame of animations).

    Decoder warnings are dropped here (callers that report them use read_image)."""
    path = Path(path)
    _check_file(path, max_bytes)
    try:
        with open(path, "rb") as handle:
            return decode_image(handle, max_pixels=max_pixels)[0]
    except OSError as exc:
        raise BadImageError(f"cannot read: {exc.strerror or exc}") from exc
