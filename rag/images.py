"""Opening catalog images safely: supported types, size limits, EXIF orientation, first frame, RGB."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 80_000_000


class BadImageError(ValueError):
    """The file is not a usable image; the message says why (for the index summary)."""


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def load_image(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Return the image as an RGB PIL image with EXIF orientation applied (first frame of animations)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadImageError(f"cannot read: {exc.strerror or exc}") from exc
    if size == 0:
        raise BadImageError("empty file")
    if size > max_bytes:
        raise BadImageError(f"file too large ({size / 2**20:.1f} MiB > {max_bytes / 2**20:.0f} MiB)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise BadImageError(f"image too large ({width}x{height} px)")
                img.seek(0)
                img.load()
                img = ImageOps.exif_transpose(img)
                return img.convert("RGB")
    except BadImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(f"not a readable image ({type(exc).__name__})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(f"corrupt image: {exc}") from exc
