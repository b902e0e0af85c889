"""Validate an uploaded query image and store it, byte for byte, inside a private temporary folder."""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from rag.errors import MmragError
from rag.hashing import bytes_sha256
from rag.images import BadImageError, check_shape

UPLOAD_TYPES = ("jpg", "jpeg", "png", "webp", "bmp")
_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    types: tuple[str, ...] = UPLOAD_TYPES

    @property
    def max_mb(self) -> int:
        return max(1, self.max_bytes // (1024 * 1024))


class BadUploadError(MmragError):
    """The uploaded file is not an acceptable query image; nothing was written."""


def new_upload_dir() -> Path:
    """A fresh private (0700) folder under the system temp dir for one app session's uploads."""
    return Path(tempfile.mkdtemp(prefix="mmrag_uploads_"))


def _inside_temp(folder: Path) -> bool:
    temp_root = Path(tempfile.gettempdir()).resolve()
    try:
        folder.resolve().relative_to(temp_root)
    except ValueError:
        return False
    return True


def check_upload(name: str, data: bytes, limits: UploadLimits = UploadLimits()) -> str:
    """Validate name, size and content; return the file suffix matching the real image format."""
    suffix = Path(name or "").suffix.lower().lstrip(".")
    if suffix not in limits.types:
        raise BadUploadError(f"{name!r} is not an accepted image type ({', '.join(limits.types)})")
    if not data:
        raise BadUploadError(f"{name!r} is empty")
    if len(data) > limits.max_bytes:
        raise BadUploadError(f"{name!r} is {len(data) / 2**20:.1f} MiB; the limit is {limits.max_mb} MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > limits.max_pixels:
                    raise BadUploadError(f"{name!r} is {width}x{height} px; the limit is {limits.max_pixels:,} pixels")
                try:
                    check_shape(width, height, max_pixels=limits.max_pixels)  # the catalog's rule for thin strips
                except BadImageError as exc:
                    raise BadUploadError(f"{name!r}: {exc}") from None
                fmt = img.format or ""
                img.load()
    except BadUploadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, SyntaxError, ValueError) as exc:
        raise BadUploadError(f"{name!r} is not a readable image ({type(exc).__name__})") from exc
    if fmt not in _FORMATS:
        raise BadUploadError(f"{name!r} is a {fmt or 'unknown'} image; accepted: {', '.join(limits.types)}")
    return _FORMATS[fmt]


def save_upload(name: str, data: bytes, folder: Path, limits: UploadLimits = UploadLimits()) -> Path:
    """Write the upload unchanged (so its content hash matches a catalog copy) as <sha256[:16]><ext> in folder.

    The user's file name is never used as a path, and folder must lie under the system temp dir.
    """
    if not _inside_temp(folder):
        raise BadUploadError(f"refusing to store uploads outside the temp dir ({folder})")
    suffix = check_upload(name, data, limits)
    target = folder / f"{bytes_sha256(data)[:16]}{suffix}"
    if not target.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return target
